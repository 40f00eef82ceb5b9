"""timm's RandomErasing (Zhong et al. 2017) in mode 'pixel' with one box, as the DeiT recipe uses it
(`--reprob 0.25 --remode pixel --recount 1`), in tf.data with a stateless per-example seed.

With probability `prob`, up to 10 attempts draw a box of area U(0.02, 1/3) x H x W and log-uniform aspect
ratio in [0.3, 1/0.3]; the first that fits (h < H and w < W) is filled with per-pixel noise. timm erases
after normalisation with N(0, 1) noise; our images stay in [0,1] and the model normalises inside, so the
noise is mean + std * N(0, 1) with the model's mean/std (the same values after normalisation), clipped to
[0, 1] (a documented difference: timm's noise is unbounded).
"""
from __future__ import annotations

import math

from robust_jax.data.tf_runtime import tf

ATTEMPTS = 10
MIN_AREA, MAX_AREA, MIN_ASPECT = 0.02, 1.0 / 3.0, 0.3


def erase(image, seed, *, prob: float, mean, std):
    """One image [H, W, C] in [0,1] -> the image with at most one box replaced by noise."""
    s_coin, s_area, s_aspect, s_top, s_left, s_noise = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    h_img, w_img = tf.shape(image)[0], tf.shape(image)[1]
    hf, wf = tf.cast(h_img, tf.float32), tf.cast(w_img, tf.float32)
    area = tf.random.stateless_uniform([ATTEMPTS], s_area, MIN_AREA, MAX_AREA) * hf * wf
    log_aspect = tf.random.stateless_uniform([ATTEMPTS], s_aspect, math.log(MIN_ASPECT), -math.log(MIN_ASPECT))
    aspect = tf.exp(log_aspect)
    h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (w < w_img) & (h < h_img)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = h[first], w[first]
    top = tf.random.stateless_uniform([], s_top, 0, tf.maximum(h_img - h + 1, 1), dtype=tf.int32)
    left = tf.random.stateless_uniform([], s_left, 0, tf.maximum(w_img - w + 1, 1), dtype=tf.int32)
    rows, cols = tf.range(h_img)[:, None], tf.range(w_img)[None, :]
    box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    noise = tf.constant(mean, tf.float32) + tf.constant(std, tf.float32) * tf.random.stateless_normal(
        tf.shape(image), s_noise)
    apply = (tf.random.stateless_uniform([], s_coin) < prob) & tf.reduce_any(fits)
    return tf.where(apply & box[..., None], tf.clip_by_value(noise, 0.0, 1.0), image)
