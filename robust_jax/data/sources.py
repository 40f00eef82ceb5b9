"""Where examples come from. A source turns `(split, shard)` into a `tf.data.Dataset` of
`{'image': uint8 or float32 HWC, 'label': int32}` plus the number of examples it will yield
(`Split.dataset`; pipelines shuffle `Split.encoded` and `Split.decode` after, so compressed images are
decoded only when used).

Names understood by `get_source(name)`:
  * `digits`           scikit-learn's bundled 8x8 digits, upsampled to 16x16x1 (no download; the default).
  * `npz:PATH`         a NumPy archive with `x_<split>` (uint8 in [0,255] or float in [0,1], NHWC) and `y_<split>`.
  * `imagefolder:PATH` PATH/<split>/<class>/<image> read by TFDS's ImageFolder (class = folder name).
  * `fake:HxWxC:K`     deterministic random uint8 images, K classes, 256 per split: smoke runs of recipes
                       whose real data (CIFAR-10, ImageNet) is not on the machine. Nothing to learn in it.
  * anything else      a TFDS dataset name (`cifar10`, `imagenet2012`, ...), prepared beforehand.

`shard = (index, count)` splits a split into `count` near-equal parts (one per process); with
`drop_remainder=True` (training) every part has exactly `n // count` examples.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Callable, Optional, Tuple

import numpy as np

import tensorflow_datasets as tfds

from robust_jax.data.tf_runtime import tf


@dataclasses.dataclass
class Split:
    """One process's part of a split: its examples and how many there are. `encoded` may hold images
    still compressed (TFDS, ImageFolder); `decode(example)` makes them `{'image': HWC, 'label'}`."""

    encoded: tf.data.Dataset
    num_examples: int
    decode: Optional[Callable] = None

    @property
    def dataset(self) -> tf.data.Dataset:
        """The decoded examples."""
        if self.decode is None:
            return self.encoded
        return self.encoded.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _shard_bounds(n: int, index: int, count: int, drop_remainder: bool) -> Tuple[int, int]:
    if drop_remainder:
        per = n // count
        return index * per, (index + 1) * per
    bounds = np.linspace(0, n, count + 1).astype(int)
    return int(bounds[index]), int(bounds[index + 1])


class ArraySource:
    """In-memory arrays (digits, npz)."""

    def __init__(self, name: str, arrays: dict, num_classes: Optional[int] = None):
        self.name = name
        self._arrays = arrays
        labels = np.concatenate([y for _, y in arrays.values()])
        self.num_classes = num_classes or int(labels.max()) + 1

    @property
    def splits(self):
        return sorted(self._arrays)

    def split(self, split: str, shard=(0, 1), drop_remainder: bool = False) -> Split:
        if split not in self._arrays:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; splits: {self.splits}")
        x, y = self._arrays[split]
        lo, hi = _shard_bounds(len(x), shard[0], shard[1], drop_remainder)
        ds = tf.data.Dataset.from_tensor_slices({"image": x[lo:hi], "label": y[lo:hi].astype(np.int32)})
        return Split(ds, hi - lo)


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((2, 2)))[..., None] / 16.0  # 8x8 -> 16x16, [0,1]
    images = images.astype(np.float32)
    labels = digits.target.astype(np.int32)
    perm = np.random.RandomState(0).permutation(len(images))  # fixed 80/20 split
    n_train = int(0.8 * len(images))
    tr, te = perm[:n_train], perm[n_train:]
    return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}


def _npz_arrays(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"npz dataset file not found: {path!r}")
    with np.load(path) as f:
        keys = set(f.files)
        splits = sorted(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
        if not splits:
            raise ValueError(f"{path!r} has no x_<split>/y_<split> pairs (keys: {sorted(keys)})")
        arrays = {}
        for s in splits:
            x, y = f[f"x_{s}"], f[f"y_{s}"].reshape(-1)
            if x.ndim != 4:
                raise ValueError(f"{path!r}: x_{s} must be NHWC (rank 4), got shape {x.shape}")
            if x.dtype != np.uint8:
                if not np.issubdtype(x.dtype, np.floating) or not (x.min() >= 0 and x.max() <= 1):  # NaN too
                    raise ValueError(f"{path!r}: x_{s} must be uint8 in [0,255] or float in [0,1], got "
                                     f"{x.dtype} in [{x.min()}, {x.max()}]")
                x = x.astype(np.float32)
            arrays[s] = (x, y.astype(np.int32))
    return arrays


class TFDSSource:
    """A prepared TFDS dataset (by name, or an ImageFolder directory). Images are decoded in the
    pipeline (after shuffling and skipping), so resuming mid-epoch does not decode skipped examples."""

    def __init__(self, name: str, data_dir: Optional[str] = None, builder=None):
        self.name = name
        data_dir = data_dir or None  # '' (the config default) means TFDS's default directory
        if builder is None:
            try:
                builder = tfds.builder(name, data_dir=data_dir)
            except tfds.core.registered.DatasetNotFoundError as e:
                raise ValueError(f"unknown dataset {name!r}: not 'digits', 'npz:PATH', 'imagefolder:PATH' "
                                 f"or a TFDS name ({e.__class__.__name__})") from None
            if not builder.is_prepared():
                raise FileNotFoundError(
                    f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}. Prepare it with:\n"
                    f"  tfds build {name}" + (f" --data_dir={data_dir}" if data_dir else "") + "\n"
                    "(ImageNet-style datasets need the archives placed in the manual dir first; see "
                    "the TFDS catalog page of the dataset).")
        self.builder = builder
        self.num_classes = builder.info.features["label"].num_classes

    @property
    def splits(self):
        return sorted(self.builder.info.splits)

    def split(self, split: str, shard=(0, 1), drop_remainder: bool = False) -> Split:
        if split not in self.builder.info.splits:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; splits: {self.splits}")
        n = self.builder.info.splits[split].num_examples
        lo, hi = _shard_bounds(n, shard[0], shard[1], drop_remainder)
        decoders = {"image": tfds.decode.SkipDecoding()}
        if isinstance(self.builder, tfds.folder_dataset.ImageFolder):
            # ImageFolder rejects the sub-split syntax `split[lo:hi]`: slice the (fixed-order) split instead.
            ds = self.builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
            ds = ds.skip(lo).take(hi - lo)
        else:
            ds = self.builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False, decoders=decoders)
        ds = ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})
        return Split(ds, hi - lo, decode=_decode_image)


def _decode_image(ex):
    return {**ex, "image": tf.io.decode_image(ex["image"], channels=3, expand_animations=False)}


def _fake_arrays(spec: str):
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+):(\d+)", spec)
    if not m:
        raise ValueError(f"fake data is named fake:HxWxC:K (e.g. fake:32x32x3:10), got fake:{spec}")
    h, w, c, k = map(int, m.groups())
    rng = np.random.RandomState(0)
    return {split: (rng.randint(0, 256, (256, h, w, c)).astype(np.uint8), rng.randint(0, k, 256).astype(np.int32))
            for split in ("train", "test")}, k


def get_source(name: str, data_dir: Optional[str] = None):
    if name.startswith("fake:"):
        arrays, k = _fake_arrays(name[5:])
        return ArraySource(name, arrays, num_classes=k)
    if name == "digits":
        return ArraySource("digits", _digits_arrays(), num_classes=10)
    if name.startswith("npz:"):
        return ArraySource(name, _npz_arrays(name[4:]))
    if name.startswith("imagefolder:"):
        root = name[len("imagefolder:"):]
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root!r} (expected {root}/<split>/<class>/<image>)")
        return TFDSSource(name, builder=tfds.folder_dataset.ImageFolder(root))
    return TFDSSource(name, data_dir)
