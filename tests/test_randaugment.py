"""RandAugment and random erasing (the DeiT recipe's augmentations) against timm 0.5.4's PIL ops, their
random draws, and the resumable tf.data stream with them on."""
import math

import numpy as np
import pytest
import tensorflow as tf

from configs import common
from robust_jax import data, parallel
from robust_jax.data import random_erasing, randaugment


def _image(h=24, w=32, seed=0):
    """A structured RGB uint8 image: gradients, a block and noise (no dependency on shipped data)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 8) % 256, (yy * 10) % 256, ((xx + yy) * 5) % 256], -1)
    img[5:12, 6:20] = [200, 30, 90]
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


COLOUR_OPS = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
              "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


@pytest.mark.parametrize("level,sign", [(7.0, -1.0), (9.3, 1.0), (2.0, 1.0)])
def test_every_op_matches_timm(level, sign):
    """Colour ops exactly (PIL's truncations included); geometric ops within one level where timm is
    given bilinear resampling (we do not offer bicubic)."""
    aa = pytest.importorskip("timm.data.auto_augment")
    from PIL import Image

    img = _image()
    pil = Image.fromarray(img)
    frac = level / 10
    kw = dict(fillcolor=tuple(int(v) for v in randaugment.FILL), resample=Image.BILINEAR)
    enhance = 1 + sign * frac * 0.9
    reference = {
        "AutoContrast": aa.auto_contrast(pil), "Equalize": aa.equalize(pil), "Invert": aa.invert(pil),
        "PosterizeIncreasing": aa.posterize(pil, 4 - int(frac * 4)),
        "SolarizeIncreasing": aa.solarize(pil, 256 - int(frac * 256)), "SolarizeAdd": aa.solarize_add(pil, int(frac * 110)),
        "ColorIncreasing": aa.color(pil, enhance), "ContrastIncreasing": aa.contrast(pil, enhance),
        "BrightnessIncreasing": aa.brightness(pil, enhance), "SharpnessIncreasing": aa.sharpness(pil, enhance),
        "Rotate": aa.rotate(pil, sign * frac * 30, **dict(kw)), "ShearX": aa.shear_x(pil, sign * frac * 0.3, **dict(kw)),
        "ShearY": aa.shear_y(pil, sign * frac * 0.3, **dict(kw)),
        "TranslateXRel": aa.translate_x_rel(pil, sign * frac * 0.45, **dict(kw)),
        "TranslateYRel": aa.translate_y_rel(pil, sign * frac * 0.45, **dict(kw)),
    }
    assert set(reference) == set(randaugment.INCREASING_OPS)
    for name, ref in reference.items():
        ours = randaugment.apply_op(name, tf.constant(img, tf.float32), level, sign).numpy()
        diff = np.abs(ours - np.asarray(ref, np.float32))
        if name in COLOUR_OPS:
            assert diff.max() == 0, name
        else:
            assert diff.max() <= 1 and diff.mean() < 0.02, (name, diff.max(), diff.mean())
        assert not np.array_equal(ours, img) or name in ("AutoContrast", "Equalize"), name


def test_policy_strings():
    assert randaugment.parse_policy("rand-m9-mstd0.5-inc1") == dict(
        magnitude=9.0, num_ops=2, magnitude_std=0.5, magnitude_max=10.0, increasing=True)
    assert randaugment.parse_policy("rand-m7-n3")["num_ops"] == 3
    assert randaugment.parse_policy("rand-mstdinf")["magnitude_std"] == math.inf
    with pytest.raises(ValueError, match="'w0'"):
        randaugment.parse_policy("rand-m9-w0")
    with pytest.raises(ValueError, match="must start with 'rand'"):
        randaugment.parse_policy("augmix-m5")


def test_rand_augment_is_seeded_and_applies_about_half_of_its_ops():
    img = tf.constant(_image() / 255.0, tf.float32)
    policy = randaugment.parse_policy("rand-m9-mstd0.5-inc1-n1")
    outs = [randaugment.rand_augment(img, tf.constant([0, i], tf.int64), policy).numpy() for i in range(120)]
    again = randaugment.rand_augment(img, tf.constant([0, 7], tf.int64), policy).numpy()
    np.testing.assert_array_equal(outs[7], again)
    unchanged = np.mean([np.abs(o - img.numpy()).max() < 1e-6 for o in outs])
    assert 0.38 < unchanged < 0.65  # each op applies with probability 1/2 (a few ops may not change this image)
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    with pytest.raises(ValueError, match="RGB"):
        randaugment.rand_augment(tf.zeros((8, 8, 1)), tf.constant([0, 1], tf.int64), policy)


def test_random_erasing_box_statistics():
    h, w = 40, 48
    img = tf.fill((h, w, 3), 0.25)
    boxes, erased = [], 0
    for i in range(300):
        out = random_erasing.erase(img, tf.constant([1, i], tf.int64), prob=0.25, mean=(0.485, 0.456, 0.406),
                                   std=(0.229, 0.224, 0.225)).numpy()
        changed = np.abs(out - 0.25).max(-1) > 0
        if changed.any():
            erased += 1
            rows, cols = np.where(changed)
            bh, bw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            boxes.append((bh * bw / (h * w), bh / bw))
        assert out.min() >= 0 and out.max() <= 1
    assert 0.18 < erased / 300 < 0.32
    areas, aspects = np.array(boxes).T
    assert areas.min() >= 0.015 and areas.max() <= 0.36
    assert aspects.min() >= 0.25 and aspects.max() <= 4.0


def test_train_stream_with_both_is_reproducible_after_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), y_train=np.arange(24) % 10,
             x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), y_test=np.arange(4))
    cfg = common.base().data
    cfg.update(dict(name=f"npz:{path}", image_size=32, train_augment="crop_flip", shuffle_buffer=100,
                    randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25))
    mesh = parallel.make_mesh()
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    full = data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3, normalization=norm)
    first = [np.asarray(next(full)["image"]) for _ in range(4)]
    resumed = data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3, start_step=2, normalization=norm)
    np.testing.assert_array_equal(np.asarray(next(resumed)["image"]), first[2])
    assert all(0.0 <= b.min() and b.max() <= 1.0 for b in first)
    with pytest.raises(ValueError, match="mean/std"):
        next(data.train_batches(cfg, global_batch_size=8, mesh=mesh, seed=3))
