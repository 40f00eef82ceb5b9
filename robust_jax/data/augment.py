"""Per-example preprocessing in tf.data, deterministic given a per-example seed (stateless ops), so a
resumed run sees exactly the augmentations an uninterrupted run would have seen.

Training: 'none', 'flip', 'crop' (pad + random crop), 'crop_flip' (CIFAR), 'inception_crop' (ImageNet:
random area 8-100%, aspect 3/4-4/3, resize, flip). Evaluation: 'none', 'resize', 'center_crop',
'resize_center_crop' (resize the shorter side to size/0.875, then center crop; ImageNet convention).
Images leave as float32 in [0,1].
"""
from __future__ import annotations

from robust_jax.data import random_erasing
from robust_jax.data import randaugment as randaugment_lib
from robust_jax.data.tf_runtime import tf

TRAIN = ("none", "flip", "crop", "crop_flip", "inception_crop")
EVAL = ("none", "resize", "center_crop", "resize_center_crop")


def to_float(image):
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _pad_crop(image, seed, padding):
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])  # zeros, like RandomCrop(padding=)
    return tf.image.stateless_random_crop(padded, tf.stack([h, w, tf.shape(image)[2]]), seed)


def _inception_crop(image, seed, size):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed, area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=False)


def _resize_center_crop(image, size, crop_fraction=0.875):
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    scale = (size / crop_fraction) / tf.minimum(h, w)
    new = tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32)
    image = tf.image.resize(image, new, method="bicubic", antialias=True)
    return _center_crop(image, size)


def _center_crop(image, size):
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def train_preprocess(image, seed, *, kind: str, size: int, padding: int = 4, randaugment=None, erasing=None):
    """One training example; `seed` is a [2] int tensor unique to (run seed, epoch, position).
    After the crop/flip of `kind`, as timm orders them: `randaugment` (a `randaugment.parse_policy` dict)
    and `erasing` (dict(prob, mean, std) of `random_erasing.erase`), each with its own seed derived by
    fold-in, so runs without them keep their exact streams."""
    if kind not in TRAIN:
        raise ValueError(f"unknown train augmentation {kind!r}; known: {TRAIN}")
    image = to_float(image)
    s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if kind == "inception_crop":
        image = _inception_crop(image, s_crop, size)
    elif kind in ("crop", "crop_flip"):
        image = _pad_crop(image, s_crop, padding)
    if kind in ("flip", "crop_flip", "inception_crop"):
        image = tf.image.stateless_random_flip_left_right(image, s_flip)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if randaugment:
        image = randaugment_lib.rand_augment(image, tf.random.experimental.stateless_fold_in(seed, 1), randaugment)
    if erasing:
        image = random_erasing.erase(image, tf.random.experimental.stateless_fold_in(seed, 2), **erasing)
    return image


def eval_preprocess(image, *, kind: str, size: int):
    if kind not in EVAL:
        raise ValueError(f"unknown eval preprocessing {kind!r}; known: {EVAL}")
    image = to_float(image)
    if kind == "resize":
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    elif kind == "center_crop":
        image = _center_crop(image, size)
    elif kind == "resize_center_crop":
        image = _resize_center_crop(image, size)
    return tf.clip_by_value(image, 0.0, 1.0)
