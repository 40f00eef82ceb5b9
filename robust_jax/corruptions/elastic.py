"""ImageNet-C `elastic_transform` as packaged in `imagecorruptions` (a smoothed random displacement field
applied with bilinear sampling).

Reference algorithm (for an `[H, W, 3]` image in [0, 1]): two independent fields of uniform noise in
[-0.005 H, 0.005 H] (both use H, as the reference does) are smoothed by a Gaussian of std
(0.01 H, 0.01 W) with scipy's 'reflect' boundary and truncate 3, multiplied by alpha = 250 * (0.05,
0.065, 0.085, 0.1, 0.12)[severity - 1] (the x displacement first, then y), and the image is resampled
at (row + dy, col + dx) by `map_coordinates(order=1, mode='reflect')`.

`elastic_from_noise` is the deterministic core fed with the two noise fields, so the parity test can
replay the reference's numpy draws; `elastic_transform` draws them from the JAX key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_jax.corruptions import filters, resample

ALPHA = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))


def elastic_from_noise(image, noise_x, noise_y, severity: int):
    """Warps `image` [H, W, C] by the smoothed, scaled noise fields `noise_x`, `noise_y` [H, W]."""
    h, w = image.shape[:2]
    sigma = (h * 0.01, w * 0.01)
    alpha = ALPHA[severity - 1]
    dx = filters.gaussian_filter(noise_x, sigma, mode="reflect", truncate=3.0) * alpha
    dy = filters.gaussian_filter(noise_y, sigma, mode="reflect", truncate=3.0) * alpha
    rows = jnp.arange(h, dtype=jnp.float32)[:, None] + dy
    cols = jnp.arange(w, dtype=jnp.float32)[None, :] + dx
    return resample.map_coordinates_linear_reflect(image, rows, cols)


def elastic_transform(key, image, severity: int):
    """ImageNet-C elastic transform with the noise fields drawn from `key`."""
    h, w = image.shape[:2]
    limit = h * 0.005
    kx, ky = jax.random.split(key)
    noise_x = jax.random.uniform(kx, (h, w), minval=-limit, maxval=limit)
    noise_y = jax.random.uniform(ky, (h, w), minval=-limit, maxval=limit)
    return elastic_from_noise(image, noise_x, noise_y, severity)
