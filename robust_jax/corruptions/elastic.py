"""ImageNet-C `elastic_transform` as packaged in `imagecorruptions` (a smoothed random displacement field
applied with bilinear sampling).

Reference algorithm (for an `[H, W, 3]` image in [0, 1]): two independent fields of uniform noise in
[-0.005 H, 0.005 H] (both use H, as the reference does) are smoothed by a Gaussian of std
(0.01 H, 0.01 W) with scipy's 'reflect' boundary and truncate 3, multiplied by alpha = 250 * (0.05,
0.065, 0.085, 0.1, 0.12)[severity - 1] (the x displacement first, then y), and the image is resampled
at (row + dy, col + dx) by `map_coordinates(order=1, mode='reflect')`.

`elastic_from_noise` is the deterministic core fed with the two noise fields, so the parity test can
replay the reference's numpy draws; `elastic_transform` draws them from the JAX key.

CIFAR-10-C (`params='cifar'`, Hendrycks & Dietterich's make_cifar_c.py) is a different algorithm with
rows (alpha, sigma, a) = 32 x (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
(0.1, 0.03, 0.03): first a random affine warp, the three points c + s, (c0 + s, c1 - s), c - s (c = the
float32 (H, W) // 2, s = min(H, W) // 3, used as (x, y) as the generator does) each moved by U(-a, a)
per coordinate, applied by `cv2.warpAffine` (bilinear, BORDER_REFLECT_101); then the displacement field
alpha * gaussian(U(-1, 1), sigma, reflect, truncate 3) per axis (x first), sampled as above.
`elastic_cifar_from_draws` is that core; the warp is bilinear at the exact source coordinate as OpenCV 5
computes it (OpenCV 3/4, which generated the published files, rounded it to 1/32 pixel first: a shift of
at most 1/64 pixel), and the affine map is solved in float32 (the generator: float64).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.corruptions import filters, resample, threefry
from robust_jax.corruptions import params as params_lib

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


def affine_points(h: int, w: int) -> np.ndarray:
    """CIFAR-10-C's three source points [3, 2] (float32), as its generator builds them."""
    centre = np.float32((h, w)) // 2
    side = min(h, w) // 3
    return np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])


def _reflect101(i, n: int):
    """OpenCV's BORDER_REFLECT_101 of integer indices (-1 -> 1, n -> n - 2)."""
    if n == 1:
        return jnp.zeros_like(i)
    period = 2 * n - 2
    m = jnp.mod(i, period)
    return jnp.where(m >= n, period - m, m)


def warp_affine_reflect101(image, source_of):
    """`cv2.warpAffine(image, M, (W, H), INTER_LINEAR, BORDER_REFLECT_101)` of an `[H, W, C]` float image,
    with `source_of` [2, 3] the map from destination (x, y, 1) to source (x, y) (the inverse of M):
    bilinear between the four neighbours of the (unquantised) source coordinate, as OpenCV 5 computes
    it (OpenCV 3/4, which made the published CIFAR-10-C, rounded source coordinates to 1/32 pixel)."""
    h, w = image.shape[:2]
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    sx = source_of[0, 0] * xs + source_of[0, 1] * ys + source_of[0, 2]
    sy = source_of[1, 0] * xs + source_of[1, 1] * ys + source_of[1, 2]
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    c0, c1 = _reflect101(x0, w), _reflect101(x0 + 1, w)
    r0, r1 = _reflect101(y0, h), _reflect101(y0 + 1, h)
    top = image[r0, c0] * (1.0 - fx) + image[r0, c1] * fx
    bottom = image[r1, c0] * (1.0 - fx) + image[r1, c1] * fx
    return top * (1.0 - fy) + bottom * fy


def _affine_from_points(src, dst):
    """The [2, 3] affine map sending the three points `src` [3, 2] to `dst` [3, 2] (cv2.getAffineTransform)."""
    a = jnp.concatenate([src, jnp.ones((3, 1), src.dtype)], axis=1)  # rows (x, y, 1)
    return jnp.linalg.solve(a, dst).T


def elastic_cifar_from_draws(image, shift, noise_x, noise_y, severity: int):
    """CIFAR-10-C's elastic transform from its draws: `shift` [3, 2] ~ U(-a, a) moving the affine points
    and `noise_x`, `noise_y` [H, W] ~ U(-1, 1)."""
    alpha, sigma, _ = params_lib.CIFAR["elastic_transform"][severity - 1]
    h, w = image.shape[:2]
    src = jnp.asarray(affine_points(h, w))
    dst = src + shift.astype(jnp.float32)
    # warpAffine samples src(M^-1 (x, y)); M maps src -> dst, so M^-1 is the map dst -> src
    warped = warp_affine_reflect101(image, _affine_from_points(dst, src))
    if alpha == 0:  # severity 1: no displacement (sigma 0 as well)
        return warped
    dx = filters.gaussian_filter(noise_x, sigma, mode="reflect", truncate=3.0) * alpha
    dy = filters.gaussian_filter(noise_y, sigma, mode="reflect", truncate=3.0) * alpha
    rows = jnp.arange(h, dtype=jnp.float32)[:, None] + dy
    cols = jnp.arange(w, dtype=jnp.float32)[None, :] + dx
    return resample.map_coordinates_linear_reflect(warped, rows, cols)


def elastic_transform(key, image, severity: int, params: str = "imagenet"):
    """ImageNet-C elastic transform with the noise fields drawn from `key` (CIFAR-10-C's variant with
    `params='cifar'`)."""
    h, w = image.shape[:2]
    if params_lib.check(params) == "cifar":
        a = params_lib.CIFAR["elastic_transform"][severity - 1][2]
        k_shift, kx, ky = jax.random.split(key, 3)
        shift = jax.random.uniform(k_shift, (3, 2), minval=-a, maxval=a)
        noise_x = threefry.uniform(kx, (h, w), -1.0, 1.0)
        noise_y = threefry.uniform(ky, (h, w), -1.0, 1.0)
        return elastic_cifar_from_draws(image, shift, noise_x, noise_y, severity)
    limit = h * 0.005
    kx, ky = jax.random.split(key)
    noise_x = threefry.uniform(kx, (h, w), -limit, limit)
    noise_y = threefry.uniform(ky, (h, w), -limit, limit)
    return elastic_from_noise(image, noise_x, noise_y, severity)
