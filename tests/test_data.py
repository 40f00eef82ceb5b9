"""Data: sources (digits, npz, ImageFolder, TFDS errors), the training stream (shapes, sharding, exact
resumption, shuffling, augmentations), evaluation batches (each example once, padding masked), the
per-process split of the data, batch-level mixing, and a 4-device run in a subprocess."""
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from robust_jax import data, parallel
from robust_jax import mixing as mix
from robust_jax.data import augment, pipeline, sources
import xla_flags  # tests/ is on sys.path (no __init__.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_cfg(name, **kw):
    """The `config.data` block of `configs.common.base()` with `name` and `kw` set."""
    from configs import common

    c = common.base().data
    c.update(dict(name=name, **kw))
    return c


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh()


def host(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


def take(it, k):
    return [host(next(it)) for _ in range(k)]


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def id_npz(tmp_path_factory):
    """40 train / 13 test random uint8 32x32 RGB images whose label is their index (an identity)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("npz") / "ids.npz"
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    xt = rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    name = write_npz(path, x_train=x, y_train=np.arange(40), x_test=xt, y_test=np.arange(13))
    return name, x, xt


# ---------------------------------------------------------------------------------------- sources

def test_digits_source():
    from sklearn.datasets import load_digits

    src = sources.get_source("digits")
    assert src.num_classes == 10 and src.splits == ["test", "train"]
    x, y = src._arrays["train"]
    xt, yt = src._arrays["test"]
    assert x.shape == (1437, 16, 16, 1) and xt.shape == (360, 16, 16, 1)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= min(x.min(), xt.min()) and max(x.max(), xt.max()) == 1.0
    assert set(y) == set(yt) == set(range(10))
    # 8x8 -> 16x16 by pixel repetition, and a fixed split: RandomState(0) permutation, first 80% train.
    d = load_digits()
    perm = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(x[:, ::2, ::2, 0], d.images[perm[:1437]] / 16.0)
    np.testing.assert_array_equal(x[:, 1::2, 1::2, 0], x[:, ::2, ::2, 0])
    np.testing.assert_array_equal(y, d.target[perm[:1437]])
    np.testing.assert_array_equal(yt, d.target[perm[1437:]])
    assert len(set(perm[:1437]) & set(perm[1437:])) == 0
    # the source's datasets yield exactly these arrays
    ex = next(iter(src.split("test").dataset.batch(360).as_numpy_iterator()))
    np.testing.assert_array_equal(ex["image"], xt)
    np.testing.assert_array_equal(ex["label"], yt)


def test_digits_without_scikit_learn_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what find_spec sees when scikit-learn is not installed
    with pytest.raises(FileNotFoundError, match=r"'digits' dataset is the copy scikit-learn ships .*pip install "):
        sources._digits_csv()


def test_npz_uint8_and_float(tmp_path, mesh):
    x8 = np.random.default_rng(0).integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    x8[0] = 255
    x8[1] = 0
    name = write_npz(tmp_path / "u8.npz", x_train=x8, y_train=np.arange(6)[:, None], x_test=x8, y_test=np.arange(6))
    src = sources.get_source(name)
    assert src.num_classes == 6 and src.splits == ["test", "train"]
    it, nb = data.eval_batches(make_cfg(name), "test", global_batch_size=6, mesh=mesh)
    b = host(next(it))
    assert nb == 1 and b["image"].dtype == np.float32 and b["image"].shape == (6, 4, 5, 3)
    np.testing.assert_array_equal(b["image"], x8.astype(np.float32) / 255.0)
    assert b["image"][0].min() == 1.0 and b["image"][1].max() == 0.0
    np.testing.assert_array_equal(b["label"], np.arange(6))

    for dtype in (np.float32, np.float64):
        xf = np.random.default_rng(1).uniform(size=(6, 4, 5, 1)).astype(dtype)
        xf[0], xf[1] = 1.0, 0.0
        name = write_npz(tmp_path / "f.npz", x_train=xf, y_train=np.arange(6) % 3, x_test=xf, y_test=np.arange(6) % 3)
        assert sources.get_source(name).num_classes == 3
        b = host(next(data.eval_batches(make_cfg(name), "test", global_batch_size=6, mesh=mesh)[0]))
        assert b["image"].dtype == np.float32
        np.testing.assert_array_equal(b["image"], xf.astype(np.float32))


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan])
def test_npz_float_out_of_range_rejected(tmp_path, bad):
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    x[1, 0, 0, 0] = bad
    name = write_npz(tmp_path / "bad.npz", x_train=x, y_train=np.zeros(2))
    with pytest.raises(ValueError, match=r"x_train must be uint8 in \[0,255\] or float in \[0,1\]"):
        sources.get_source(name)


def test_npz_errors(tmp_path):
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        sources.get_source(f"npz:{missing}")
    name = write_npz(tmp_path / "ok.npz", x_train=np.zeros((2, 4, 4, 1), np.uint8), y_train=np.zeros(2),
                     x_test=np.zeros((2, 4, 4, 1), np.uint8), y_test=np.zeros(2))
    with pytest.raises(ValueError, match=r"no split 'validation'; splits: \['test', 'train'\]"):
        sources.get_source(name).split("validation")
    with pytest.raises(ValueError, match="rank 4"):
        sources.get_source(write_npz(tmp_path / "r3.npz", x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2)))
    with pytest.raises(ValueError, match="no x_<split>/y_<split> pairs"):
        sources.get_source(write_npz(tmp_path / "none.npz", images=np.zeros((2, 4, 4, 1), np.uint8)))


CLASSES = ["cat", "ant", "bee"]  # ImageFolder sorts: ant=0, bee=1, cat=2


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/<split>/<class>/<j>.png, 20x24 RGB constant images whose value encodes (split, class, j)."""
    root = tmp_path_factory.mktemp("imagefolder")
    values = {}
    for s, split in enumerate(["train", "test"]):
        for c, cls in enumerate(CLASSES):
            os.makedirs(root / split / cls)
            for j in range(4):
                v = 100 * s + 30 * c + 7 * j + 1
                Image.fromarray(np.full((20, 24, 3), v, np.uint8)).save(root / split / cls / f"{j}.png")
                values.setdefault(split, {})[v] = sorted(CLASSES).index(cls)
    return str(root), values


def test_imagefolder_eval(image_folder, mesh):
    root, values = image_folder
    cfg = make_cfg(f"imagefolder:{root}", eval_preprocess="resize", image_size=16, num_classes=3)
    src = data.source_for(cfg)
    assert src.num_classes == 3 and src.splits == ["test", "train"]
    assert data.example_shape(cfg) == (16, 16, 3)
    it, nb = data.eval_batches(cfg, "test", global_batch_size=5, mesh=mesh)
    assert nb == 3
    batches = [host(b) for b in it]
    seen = []
    for b in batches:
        assert b["image"].shape == (5, 16, 16, 3) and b["image"].dtype == np.float32
        assert b["label"].dtype == np.int32
        for img, label, m in zip(b["image"], b["label"], b["mask"]):
            if m:
                v = int(round(float(img[0, 0, 0]) * 255))
                np.testing.assert_allclose(img, v / 255.0, atol=1e-6)  # a constant image stays constant
                assert values["test"][v] == label
                seen.append(v)
            else:
                assert not img.any() and label == 0
    assert sorted(seen) == sorted(values["test"])  # each example exactly once
    assert sum(b["mask"].sum() for b in batches) == 12


def test_imagefolder_train(image_folder, mesh):
    root, values = image_folder
    cfg = make_cfg(f"imagefolder:{root}", train_augment="inception_crop", image_size=16)
    part = data.source_for(cfg).split("train", (1, 2), drop_remainder=True)  # a process's half
    assert part.num_examples == 6
    assert part.encoded.element_spec["image"].dtype == tf.string  # shuffled/cached still compressed
    ex = list(part.dataset.as_numpy_iterator())  # `dataset`: the decoded view
    assert len(ex) == 6 and all(e["image"].shape == (20, 24, 3) and e["image"].dtype == np.uint8 for e in ex)
    assert data.steps_per_epoch(cfg, 4) == 3
    batches = take(data.train_batches(cfg, global_batch_size=4, mesh=mesh, seed=0), 3)
    seen = []
    for b in batches:
        assert b["image"].shape == (4, 16, 16, 3)
        for img, label in zip(b["image"], b["label"]):
            v = int(round(float(img[0, 0, 0]) * 255))
            np.testing.assert_allclose(img, v / 255.0, atol=1e-5)
            assert values["train"][v] == label
            seen.append(v)
    assert sorted(seen) == sorted(values["train"])  # one epoch = every example once


def test_pipelines_are_traced_without_autograph(image_folder, mesh, monkeypatch):
    """tf.data traces the pipelines' functions as written (`tf_runtime.without_autograph`): AutoGraph's rewrite of
    their sources cost every run ~1 s, and they branch on Python values only. Covers the image decode and label
    cast of a TFDS source (an ImageFolder), train preprocessing with RandAugment and random erasing, and eval
    preprocessing."""
    from tensorflow.python.autograph.impl import api

    converted = []
    real = api.converted_call
    monkeypatch.setattr(api, "converted_call", lambda f, *a, **k: converted.append(f) or real(f, *a, **k))
    root, _ = image_folder
    cfg = make_cfg(f"imagefolder:{root}", train_augment="crop_flip", eval_preprocess="resize", image_size=16,
                   randaugment="rand-m9-mstd0.5", random_erasing=0.5)
    batch = next(data.train_batches(cfg, global_batch_size=4, mesh=mesh, seed=0,
                                    normalization=((0.5,) * 3, (0.5,) * 3)))
    assert batch["image"].shape == (4, 20, 24, 3)  # crop_flip keeps the stored size
    assert next(data.eval_batches(cfg, "test", global_batch_size=4, mesh=mesh)[0])["image"].shape == (4, 16, 16, 3)
    ours = [f.__qualname__ for f in converted if getattr(f, "__module__", "").startswith("robust_jax")]
    assert not ours, ours  # (TFDS's ImageFolder converts its own file reader: not ours to change)


def test_imagefolder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        sources.get_source(f"imagefolder:{tmp_path / 'nope'}")


def test_tfds_not_prepared_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        sources.get_source("mnist", str(tmp_path))
    assert f"tfds build mnist --data_dir={tmp_path}" in str(e.value)
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
        sources.get_source("no_such_dataset_xyz", str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.source_for(make_cfg("no_such_dataset_xyz"))


def test_tfds_empty_data_dir_means_default(tmp_path, monkeypatch):
    """The config default data_dir='' must mean TFDS's default directory, not the working directory."""
    seen = []

    import tensorflow_datasets as tfds

    def fake_builder(name, data_dir=None):
        seen.append(data_dir)
        raise tfds.core.registered.DatasetNotFoundError(name)

    monkeypatch.setattr(tfds, "builder", fake_builder)
    with pytest.raises(ValueError):
        data.source_for(make_cfg("mnist", data_dir=""))
    assert seen == [None]


def test_num_classes_mismatch(mesh):
    cfg = make_cfg("digits", num_classes=7)
    with pytest.raises(ValueError, match="num_classes=7 .* has 10 classes"):
        data.source_for(cfg)
    with pytest.raises(ValueError, match="num_classes=7"):
        next(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=0))
    with pytest.raises(ValueError, match="num_classes=7"):
        data.eval_batches(cfg, "test", global_batch_size=8, mesh=mesh)
    data.source_for(make_cfg("digits", num_classes=10))  # matching (or 0 = unchecked) is fine


# ---------------------------------------------------------------------------------- train stream

def test_train_batches_shape_and_sharding(mesh):
    cfg = make_cfg("digits")
    assert data.steps_per_epoch(cfg, 32) == 1437 // 32
    b = next(data.train_batches(cfg, global_batch_size=32, mesh=mesh, seed=0))
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (32, 16, 16, 1) and b["image"].dtype == jnp.float32
    assert b["label"].shape == (32,) and b["label"].dtype == jnp.int32
    for v in b.values():
        assert isinstance(v, jax.Array)
        assert v.sharding.is_equivalent_to(parallel.batch_sharding(mesh), v.ndim)
    x = np.asarray(b["image"])
    assert 0.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(ValueError, match="larger than the training split"):
        next(data.train_batches(cfg, global_batch_size=2048, mesh=mesh, seed=0))


def _labels(batches):
    return np.concatenate([b["label"] for b in batches])


def test_train_resume_epochs_and_seeds(id_npz, mesh):
    name, x, _ = id_npz
    cfg = make_cfg(name, train_augment="crop_flip", crop_padding=2)
    per_epoch = data.steps_per_epoch(cfg, 8)
    assert per_epoch == 5
    full = take(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3), 13)
    epochs = [_labels(full[e * 5:(e + 1) * 5]) for e in range(2)]
    for labels in epochs:  # each epoch visits every example once
        assert sorted(labels) == list(range(40))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert not np.array_equal(epochs[0], np.arange(40))
    # the same example is augmented differently in different epochs
    pos = [{int(l): img for b in full[e * 5:(e + 1) * 5] for l, img in zip(b["label"], b["image"])} for e in range(2)]
    assert sum(not np.array_equal(pos[0][i], pos[1][i]) for i in range(40)) > 20
    # resuming at k (inside epoch 0, at an epoch boundary, inside epoch 2) gives the tail of the stream from 0
    for k in (2, 5, 11):
        tail = take(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3, start_step=k), 13 - k)
        for a, b in zip(tail, full[k:]):
            np.testing.assert_array_equal(a["label"], b["label"])
            np.testing.assert_array_equal(a["image"], b["image"])
    # the same seed repeats itself; another seed shuffles differently
    again = take(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3), 5)
    other = take(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=4), 5)
    np.testing.assert_array_equal(_labels(again), epochs[0])
    assert not np.array_equal(_labels(other), epochs[0])


def _crop_offsets(out, src, p):
    """(dy, dx) with out == zero-padded src[dy:dy+h, dx:dx+w], or None."""
    h, w = src.shape[:2]
    padded = np.pad(src, ((p, p), (p, p), (0, 0)))
    hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
            if np.array_equal(out, padded[dy:dy + h, dx:dx + w])]
    return hits[0] if hits else None


@pytest.mark.parametrize("kind", ["none", "flip", "crop", "crop_flip", "inception_crop"])
def test_train_augmentations(id_npz, mesh, kind):
    name, x, _ = id_npz
    p = 3
    cfg = make_cfg(name, train_augment=kind, crop_padding=p, image_size=24)
    batches = take(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=0), 5)
    size = 24 if kind == "inception_crop" else 32
    offsets, flips = set(), 0
    for b in batches:
        assert b["image"].shape == (8, size, size, 3) and b["image"].dtype == np.float32
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
        for img, label in zip(b["image"], b["label"]):
            orig = x[label].astype(np.float32) / 255.0
            if kind == "none":
                np.testing.assert_array_equal(img, orig)
            elif kind == "flip":
                flipped = np.array_equal(img, orig[:, ::-1])
                assert flipped or np.array_equal(img, orig)
                flips += flipped
            elif kind in ("crop", "crop_flip"):
                off = _crop_offsets(img, orig, p)
                if off is None and kind == "crop_flip":
                    off = _crop_offsets(img[:, ::-1], orig, p)
                    flips += 1
                assert off is not None, "not a shifted copy of the zero-padded image"
                offsets.add(off)
    if kind in ("crop", "crop_flip"):
        assert len(offsets) > 5  # random offsets, not a fixed window
    if kind in ("flip", "crop_flip"):
        assert 5 < flips < 35
    if kind == "crop":
        assert flips == 0


def test_augment_rejects_unknown_kind():
    img = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="unknown train augmentation"):
        augment.train_preprocess(img, np.array([0, 0]), kind="rotate", size=4)
    with pytest.raises(ValueError, match="unknown eval preprocessing"):
        augment.eval_preprocess(img, kind="rotate", size=4)


def test_process_shards(tmp_path, mesh, monkeypatch):
    """Two processes read disjoint halves; identical images on both are augmented independently."""
    half = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    name = write_npz(tmp_path / "two.npz", x_train=np.concatenate([half, half]), y_train=np.arange(40),
                     x_test=np.zeros((41, 4, 4, 1), np.uint8), y_test=np.arange(41))
    cfg = make_cfg(name, train_augment="crop_flip")
    streams, evals = [], []
    for index in range(2):
        monkeypatch.setattr(pipeline, "_process_shard", lambda index=index: (index, 2))
        streams.append(take(data.train_batches(cfg, global_batch_size=4, mesh=mesh, seed=0), 5))
        it, nb = data.eval_batches(cfg, "test", global_batch_size=8, mesh=mesh)
        assert nb == 3  # ceil(21 / 8) for the larger part, the same on both processes
        evals.append([host(b) for b in it])
    l0, l1 = _labels(streams[0]), _labels(streams[1])
    assert set(l0) <= set(range(20)) and set(l1) <= set(range(20, 40))
    np.testing.assert_array_equal(l0 + 20, l1)  # same shuffle of each process's part, same images
    differ = [not np.array_equal(a, b) for s0, s1 in zip(*streams) for a, b in zip(s0["image"], s1["image"])]
    assert sum(differ) > len(differ) // 2
    seen = [l for part in evals for b in part for l, m in zip(b["label"], b["mask"]) if m]
    assert sorted(seen) == list(range(41))


# ---------------------------------------------------------------------------------- eval batches

@pytest.mark.parametrize("num_examples,batch", [(None, 64), (100, 64), (128, 64), (1000, 50), (7, 8)])
def test_eval_batches(mesh, num_examples, batch):
    cfg = make_cfg("digits")
    xt, yt = sources.get_source("digits")._arrays["test"]
    n = min(360, num_examples or 360)
    it, nb = data.eval_batches(cfg, "test", global_batch_size=batch, mesh=mesh, num_examples=num_examples)
    assert nb == math.ceil(n / batch)
    batches = [host(b) for b in it]
    assert len(batches) == nb
    for b in batches:
        assert b["image"].shape == (batch, 16, 16, 1) and b["label"].shape == b["mask"].shape == (batch,)
        assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
    mask = np.concatenate([b["mask"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(nb * batch) < n)  # real examples first, padding after
    np.testing.assert_array_equal(images[:n], xt[:n])  # each example once, in order
    np.testing.assert_array_equal(labels[:n], yt[:n])
    assert not images[n:].any() and not labels[n:].any()


# ------------------------------------------------------------------------------------------- mix

def test_smooth():
    t = np.asarray(mix.smooth(jnp.array([0, 2]), 4, 0.1))
    np.testing.assert_allclose(t, [[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(mix.smooth(jnp.array([1]), 3)), [[0, 1, 0]])


def _identity_batch(b=8, h=12, w=10, c=3, seed=0):
    x = jax.random.uniform(jax.random.key(seed), (b, h, w, c))
    return x, jax.nn.one_hot(jnp.arange(b), b)  # label i = example i: targets name the sources


def test_mixup():
    x, t = _identity_batch()
    for seed in range(4):
        xm, tm = jax.jit(mix.mixup, static_argnums=3)(jax.random.key(seed), x, t, 0.4)
        np.testing.assert_allclose(np.asarray(tm).sum(1), 1.0, rtol=1e-6)
        # the image is the target-weighted combination of the source images
        np.testing.assert_allclose(np.asarray(xm), np.einsum("ij,jhwc->ihwc", np.asarray(tm), np.asarray(x)),
                                   rtol=1e-5, atol=1e-6)
        assert 0.0 <= float(xm.min()) and float(xm.max()) <= 1.0


def test_cutmix():
    x, t = _identity_batch()
    xs, _h, _w = np.asarray(x), x.shape[1], x.shape[2]
    pasted_any = False
    for seed in range(8):
        xm, tm = jax.jit(mix.cutmix, static_argnums=3)(jax.random.key(seed), x, t, 1.0)
        xm, tm = np.asarray(xm), np.asarray(tm)
        np.testing.assert_allclose(tm.sum(1), 1.0, rtol=1e-6)
        boxes = set()
        for i in range(len(xs)):
            others = [j for j in np.flatnonzero(tm[i] > 1e-7) if j != i]
            assert len(others) <= 1
            if not others:  # nothing pasted, or pasted from itself
                np.testing.assert_array_equal(xm[i], xs[i])
                continue
            j = others[0]
            from_self = (xm[i] == xs[i]).all(-1)
            from_other = (xm[i] == xs[j]).all(-1)
            assert (from_self | from_other).all()  # every pixel from the image or its partner
            np.testing.assert_allclose(from_other.mean(), tm[i, j], rtol=1e-6)  # weight = pasted area
            np.testing.assert_allclose(tm[i, i], 1 - from_other.mean(), rtol=1e-6)
            rows, cols = np.flatnonzero(from_other.any(1)), np.flatnonzero(from_other.any(0))
            if len(rows):
                assert from_other.sum() == len(rows) * len(cols)  # a rectangle
                boxes.add((rows[0], rows[-1], cols[0], cols[-1]))
                pasted_any = True
        assert len(boxes) <= 1  # one box for the whole batch
    assert pasted_any


def test_mix_batch():
    x, _ = _identity_batch()
    labels = jnp.arange(8) % 5
    xo, yo = mix.mix_batch(jax.random.key(0), x, labels, num_classes=5)
    assert xo is x and yo is labels
    xo, yo = mix.mix_batch(jax.random.key(0), x, labels, num_classes=5, label_smoothing=0.1)
    assert xo is x
    np.testing.assert_allclose(np.asarray(yo), np.asarray(mix.smooth(labels, 5, 0.1)))
    f = jax.jit(lambda k: mix.mix_batch(k, x, labels, num_classes=5, mixup_alpha=0.2, cutmix_alpha=1.0,
                                        label_smoothing=0.1))
    for seed in range(3):
        xo, yo = f(jax.random.key(seed))
        assert xo.shape == x.shape and yo.shape == (8, 5)
        np.testing.assert_allclose(np.asarray(yo).sum(1), 1.0, rtol=1e-6)
        assert float(yo.min()) >= 0.1 / 5 - 1e-6  # smoothing mass survives mixing


def test_mix_batch_probabilities_choose_per_batch():
    """mix_prob: the share of mixed batches (the rest keep their images, labels only smoothed); cutmix_prob:
    the share of cutmix among mixed batches (cutmix pastes pixels, mixup blends every pixel)."""
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    labels = jnp.arange(4)

    def kinds(**kw):
        f = jax.jit(jax.vmap(lambda k: mix.mix_batch(k, x, labels, num_classes=4, mixup_alpha=0.8,
                                                     cutmix_alpha=1.0, **kw)[0]))
        out = np.asarray(f(jax.random.split(jax.random.key(0), 400)))
        same = np.all(out == np.asarray(x), axis=(1, 2, 3, 4))
        pasted = np.all(np.isin(out, np.asarray(x)), axis=(1, 2, 3, 4)) & ~same  # every pixel an original
        return same.mean(), pasted.mean(), (~same & ~pasted).mean()

    unmixed, cut, blended = kinds(mix_prob=0.3, cutmix_prob=0.5)
    assert abs(unmixed - 0.7) < 0.07 and abs(cut - 0.15) < 0.06 and abs(blended - 0.15) < 0.06
    unmixed, cut, blended = kinds(mix_prob=1.0, cutmix_prob=1.0)
    assert cut > 0.9 and blended == 0.0  # a cutmix box may be empty (lam near 1): then the batch is unchanged
    unmixed, cut, blended = kinds(mix_prob=0.0)
    assert unmixed == 1.0
    with pytest.raises(ValueError, match="mix_prob is a probability"):
        mix.mix_batch(jax.random.key(0), x, labels, num_classes=4, mixup_alpha=0.8, mix_prob=1.5)


# ---------------------------------------------------------------------------------- multi-device

def test_four_devices_subprocess():
    script = textwrap.dedent("""
        import jax, numpy as np
        from configs import common
        from robust_jax import data, parallel
        assert jax.device_count() == 4, jax.devices()
        mesh = parallel.make_mesh()
        cfg = common.base().data
        cfg.update(dict(name="digits", train_augment="crop", crop_padding=2))
        b = next(data.train_batches(cfg, global_batch_size=16, mesh=mesh, seed=0))
        for v in b.values():
            assert len(v.sharding.device_set) == 4, v.sharding
            shards = v.addressable_shards
            assert len(shards) == 4 and {s.data.shape[0] for s in shards} == {4}, [s.data.shape for s in shards]
            np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in
                                          sorted(shards, key=lambda s: s.index[0].start)]), np.asarray(v))
        assert b["image"].shape == (16, 16, 16, 1)
        it, nb = data.eval_batches(cfg, "test", global_batch_size=16, mesh=mesh, num_examples=20)
        masks = [np.asarray(e["mask"]) for e in it]
        assert nb == 2 and sum(m.sum() for m in masks) == 20
        try:
            next(data.train_batches(cfg, global_batch_size=6, mesh=mesh, seed=0))
            raise AssertionError("batch 6 on 4 devices accepted")
        except ValueError as e:
            assert "divisible" in str(e)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS=xla_flags.plus("--xla_force_host_platform_device_count=4"), JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_eval_subset_spread_takes_every_kth_example_and_first_takes_the_head():
    """`data.eval_subset='spread'` picks examples 0, k, 2k, ... (k = split size // num_examples) in a fixed
    shuffled order, so a split sorted by class still yields every class; 'first' the first ones; anything
    else is an error."""
    import numpy as np

    from robust_jax import data as data_lib
    from robust_jax import parallel

    cfg = make_cfg("digits", eval_subset="spread")
    mesh = parallel.make_mesh()
    full = np.concatenate([b["label"] for b in data_lib.eval_batches(cfg, "test", global_batch_size=400, mesh=mesh)[0]])
    n = data_lib.source_for(cfg).split("test").num_examples
    full = full[:n]
    got = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"]) > 0]
                          for b in data_lib.eval_batches(cfg, "test", global_batch_size=8, mesh=mesh, num_examples=12)[0]])
    k = n // 12
    np.testing.assert_array_equal(np.sort(got), np.sort(full[::k][:12]))  # the same examples, mixed order
    assert not np.array_equal(got, full[::k][:12])
    again = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"]) > 0]
                            for b in data_lib.eval_batches(cfg, "test", global_batch_size=4, mesh=mesh, num_examples=12)[0]])
    np.testing.assert_array_equal(got, again)  # a fixed order, whatever the batch size
    cfg.eval_subset = "first"
    got = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"]) > 0]
                          for b in data_lib.eval_batches(cfg, "test", global_batch_size=8, mesh=mesh, num_examples=12)[0]])
    np.testing.assert_array_equal(got, full[:12])
    cfg.eval_subset = "random"
    with pytest.raises(ValueError, match="eval_subset"):
        data_lib.eval_batches(cfg, "test", global_batch_size=8, mesh=mesh, num_examples=12)
