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

Labels are checked where they are read: in-memory arrays (digits, npz, fake) must hold integer class indices
>= 0 (below `num_classes` when it is given), one per image. `check_classification_data` adds what only a
classifier's own dataset must satisfy (at least 2 classes; with the number of classes inferred, no evaluation
label outside the training labels' range); shift sets may cover a subset of the classes and skip it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Callable, Optional, Tuple

import numpy as np

from robust_jax.data.tf_runtime import tf, without_autograph


class DataError(ValueError):
    """A dataset the run cannot use as it is (labels, lengths, classes); the message names the file or folder."""


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
        return self.encoded.map(without_autograph(self.decode), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)


def _shard_bounds(n: int, index: int, count: int, drop_remainder: bool) -> Tuple[int, int]:
    if drop_remainder:
        per = n // count
        return index * per, (index + 1) * per
    bounds = np.linspace(0, n, count + 1).astype(int)
    return int(bounds[index]), int(bounds[index + 1])


class ArraySource:
    """In-memory arrays (digits, npz): `arrays = {split: (images, labels)}`. Without `num_classes` it is
    inferred as the largest label + 1."""

    def __init__(self, name: str, arrays: dict, num_classes: Optional[int] = None):
        self.name = name
        for split, (x, y) in arrays.items():
            _check_array_labels(name, split, x, y, num_classes)
        self._arrays = arrays = {split: (x, np.asarray(y).astype(np.int32, copy=False))
                                 for split, (x, y) in arrays.items()}
        labels = np.concatenate([y for _, y in arrays.values()])
        self.num_classes = num_classes or (int(labels.max()) + 1 if labels.size else 0)

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


def _check_array_labels(name: str, split: str, x, y, num_classes: Optional[int]) -> None:
    """One integer label >= 0 per image (and < num_classes when given) in split `split` of source `name`."""
    where = f"dataset {name!r}, split {split!r}"
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; x_{split} and y_{split} must have the "
                        "same length (one label per image)")
    if not y.size:
        return
    if (not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y))
            or not np.array_equal(y, np.round(y))):
        raise DataError(f"{where}: labels must be integer class indices, got dtype {y.dtype} with non-integer "
                        "values; store them as ints 0..K-1")
    lo, hi = int(np.min(y)), int(np.max(y))
    if lo < 0 or (num_classes and hi >= num_classes):
        allowed = f"[0, {num_classes})" if num_classes else "[0, K) (K classes)"
        negative = f" ({int(np.sum(y < 0))} negative)" if lo < 0 else ""
        raise DataError(f"{where}: labels must be class indices in {allowed}, got values in [{lo}, {hi}]{negative}; "
                        "relabel the data as 0..K-1 (an 'ignore' label such as -1 has no place in a classification "
                        "split)")


def _digits_csv() -> str:
    """The path of scikit-learn's `datasets/data/digits.csv.gz`, found without importing scikit-learn (its
    import costs ~1 s per process on 2 cores, paid by every run on the default data); `load_digits` reads the
    same file."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = spec and spec.submodule_search_locations and os.path.join(
        spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not path or not os.path.exists(path):
        raise FileNotFoundError("the 'digits' dataset is the copy scikit-learn ships (sklearn/datasets/data/"
                                "digits.csv.gz), and no installed scikit-learn has it; `pip install "
                                "scikit-learn` (a dependency of robust_jax) or choose another data.name")
    return path


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    # 1,797 rows of 64 pixel values in 0..16 and the label, as `sklearn.datasets.load_digits` parses them.
    table = np.loadtxt(_digits_csv(), delimiter=",")
    images = np.kron(table[:, :-1].reshape(-1, 8, 8), np.ones((2, 2)))[..., None] / 16.0  # 8x8 -> 16x16, [0,1]
    images = images.astype(np.float32)
    labels = table[:, -1].astype(np.int32)
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
            x, y = f[f"x_{s}"], f[f"y_{s}"]
            if x.ndim != 4:
                raise ValueError(f"{path!r}: x_{s} must be NHWC (rank 4), got shape {x.shape}")
            if y.ndim > 1 and y.size != len(y):
                raise DataError(f"{path!r}: y_{s} must hold one class index per image (shape [N] or [N, 1]), got "
                                f"shape {y.shape}")
            y = y.reshape(-1)
            if len(x) != len(y):
                raise DataError(f"{path!r}: x_{s} has {len(x)} images but y_{s} has {len(y)} labels; they must "
                                "have the same length (one label per image)")
            if x.dtype != np.uint8:
                if not np.issubdtype(x.dtype, np.floating) or not (x.min() >= 0 and x.max() <= 1):  # NaN too
                    raise ValueError(f"{path!r}: x_{s} must be uint8 in [0,255] or float in [0,1], got "
                                     f"{x.dtype} in [{x.min()}, {x.max()}]")
                x = x.astype(np.float32)
            arrays[s] = (x, y)  # labels are checked (and made int32) by ArraySource
    return arrays


def _tfds():
    """`tensorflow_datasets`, imported on first use: only TFDS and ImageFolder sources need it, and its import
    costs every process that reads in-memory data (digits, npz, fake) 0.3-0.5 CPU-s."""
    import tensorflow_datasets

    return tensorflow_datasets


class TFDSSource:
    """A prepared TFDS dataset (by name, or an ImageFolder directory). Images are decoded in the
    pipeline (after shuffling and skipping), so resuming mid-epoch does not decode skipped examples."""

    def __init__(self, name: str, data_dir: Optional[str] = None, builder=None):
        tfds = _tfds()
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
        tfds = _tfds()
        decoders = {"image": tfds.decode.SkipDecoding()}
        if isinstance(self.builder, tfds.folder_dataset.ImageFolder):
            # ImageFolder rejects the sub-split syntax `split[lo:hi]`: slice the (fixed-order) split instead.
            ds = self.builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
            ds = ds.skip(lo).take(hi - lo)
        else:
            ds = self.builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False, decoders=decoders)
        ds = ds.map(without_autograph(_int32_label))
        return Split(ds, hi - lo, decode=_decode_image)


def _int32_label(ex):
    return {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)}


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


def check_classification_data(src, train_split: str, eval_splits=(), *, inferred: bool) -> None:
    """What a classifier's own dataset must satisfy beyond its labels' range: at least 2 classes (a one-class
    folder would report 100% accuracy), and, when the number of classes is `inferred` from the labels of
    in-memory arrays (config data.num_classes=0), labels of `eval_splits` inside the range the training split
    covers (a 1-based or extra label in the test split would silently add a class nothing is trained on).
    Raises DataError naming the dataset and how to fix it."""
    if src.num_classes < 2:
        kind = ("class folder" if str(src.name).startswith("imagefolder:") else "class")
        raise DataError(f"dataset {src.name!r} has {src.num_classes} {kind}(s); a classifier needs at least 2 "
                        "(an accuracy over one class is 100% by construction). Add the other classes' examples "
                        "(ImageFolder: one sub-folder per class under each split).")
    arrays = getattr(src, "_arrays", None)
    if not inferred or arrays is None or train_split not in arrays:
        return
    train_labels = arrays[train_split][1]
    k = int(train_labels.max()) + 1 if train_labels.size else 0
    for split in eval_splits:
        if split in arrays and split != train_split and arrays[split][1].size and arrays[split][1].max() >= k:
            raise DataError(f"dataset {src.name!r}: split {split!r} has labels up to {int(arrays[split][1].max())}, "
                            f"but the training split {train_split!r} only has labels in [0, {k}) (data.num_classes=0 "
                            "infers the classes from the labels). Relabel the data, or set data.num_classes to the "
                            "true number of classes if the training split lacks some.")


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
        return TFDSSource(name, builder=_tfds().folder_dataset.ImageFolder(root))
    return TFDSSource(name, data_dir)
