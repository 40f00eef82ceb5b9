"""Blur corruptions of ImageNet-C: defocus, glass, motion, zoom and gaussian blur.

Ports of the algorithms of the reference generator (`imagecorruptions`), with its severity tables, on
one `[H, W, 3]` float32 image in [0,1] (the reference works on uint8 / 255; clipping and uint8
quantisation of the output happen in `corrupt`). Filters come from `filters.py`. Random corruptions
(glass: pixel offsets, motion: the angle) are a deterministic `*_core` fed with the draws plus a public
function drawing them with `jax.random`.

- defocus_blur: `cv2.filter2D` with the antialiased disk kernel, border reflect-101.
- gaussian_blur: `skimage.filters.gaussian(sigma)` per channel (scipy 'nearest' border, truncate 4).
- motion_blur: the reference's shift-and-sum along a line at angle ~ U(-45, 45) degrees.
- zoom_blur: mean of the image and its centre-cropped zooms (`scipy.ndimage.zoom`, order 1, i.e.
  bilinear with aligned corners) over the reference's zoom factors, computed as static two-tap gathers.
- glass_blur: gaussian blur, uint8 truncation, the reference's local pixel "shuffle", gaussian blur.
  The reference's numba loop visits pixels (h, w) in reverse raster order and does
  `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on array views; the second assignment reads the already
  overwritten x[h, w], so it is a copy `x[h, w] = x[h', w']`, not a swap. We reproduce that behaviour
  exactly (tests replay the reference's draws), but instead of ~H*W sequential steps we resolve the
  chains of copies with pointer jumping: pixel p takes the value of source q = p + offset; if q was
  already written earlier in the same pass, p takes whatever q took, recursively. Rounds of gathers
  until no pointer is left unresolved (log2 of the longest chain) give every pixel its final source in
  parallel; the result is identical to the sequential loop. The offsets are `jax.random.randint`'s,
  drawn by `threefry.randint` (same values, its Threefry hash unrolled).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import stages
from robust_jax.corruptions import filters
from robust_jax.corruptions import params as params_lib
from robust_jax.corruptions import threefry

DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, alias blur)
GAUSSIAN_SIGMA = (1, 2, 3, 4, 6)
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max delta, passes)
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma)


def zoom_factors(severity: int, params: str = "imagenet") -> np.ndarray:
    """The reference's zoom factors (numpy float64 `arange`s, kept bit-identical)."""
    if params_lib.check(params) == "cifar":
        return params_lib.cifar_zoom_factors(severity)
    return [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
            np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][severity - 1]


# --------------------------------------------------------------------------------------- defocus, gaussian

def defocus_blur(key, image, severity: int, params: str = "imagenet"):
    del key
    radius, alias = params_lib.pick(params, DEFOCUS, "defocus_blur")[severity - 1]
    return filters.correlate2d(image, filters.disk_kernel(radius, alias), mode="mirror")


def gaussian_blur(key, image, severity: int, params: str = "imagenet"):
    del key
    sigma = params_lib.pick(params, GAUSSIAN_SIGMA, "gaussian_blur")[severity - 1]
    return filters.gaussian_filter(image, sigma, mode="nearest", truncate=4.0)


# ------------------------------------------------------------------------------------------------ motion

def motion_blur_core(image, angle, severity: int, params: str = "imagenet"):
    """The reference's motion blur of `image` along `angle` degrees (traced scalar)."""
    radius, sigma = params_lib.pick(params, MOTION, "motion_blur")[severity - 1]
    return filters.motion_blur(image, radius, sigma, angle)


def motion_blur(key, image, severity: int, params: str = "imagenet"):
    angle = jax.random.uniform(key, (), jnp.float32, -45.0, 45.0)
    return motion_blur_core(image, angle, severity, params)


# -------------------------------------------------------------------------------------------------- zoom

def zoom_taps(n: int, factor: float, centre_trim: bool = False):
    """Two-tap linear interpolation along one axis of the reference's `clipped_zoom`: the centre crop
    of ch = ceil(n / factor) pixels starting at (n - ch) // 2 is zoomed by scipy.ndimage.zoom (order 1,
    grid_mode False: output o samples input o * (ch - 1) / (out - 1), out = round(ch * factor)) and the
    first n outputs kept (imagecorruptions), or with `centre_trim` the n outputs from (out - n) // 2 on
    (CIFAR-10-C's `clipped_zoom`). Returns (index0, index1, weight0, weight1), each [n], indices into the
    full axis (host-side float64, like scipy)."""
    ch = int(np.ceil(n / float(factor)))
    top = (n - ch) // 2
    out = round(ch * factor)  # Python round, as scipy.ndimage.zoom computes its output shape
    ratio = (ch - 1) / (out - 1) if out > 1 else 1.0
    trim = (out - n) // 2 if centre_trim else 0
    coord = (np.arange(n, dtype=np.float64) + trim) * ratio
    i0 = np.floor(coord).astype(np.int64)
    frac = coord - i0
    i1 = np.minimum(i0 + 1, ch - 1)  # frac is 0 wherever i0 + 1 would leave the crop
    return top + i0, top + i1, 1.0 - frac, frac


def zoom_blur(key, image, severity: int, params: str = "imagenet"):
    """(x + sum_z clipped_zoom(x, z)) / (len(z) + 1) over the reference's factors z.

    The factors are unrolled with their tap tables as constants, so that XLA:CPU computes the whole sum
    in one fused loop over the output with no intermediate images (~4x faster than a loop over the
    factors gathering with traced tables)."""
    del key
    h, w = image.shape[:2]
    centre = params_lib.check(params) == "cifar"
    factors = zoom_factors(severity, params)
    acc = jnp.zeros_like(image)
    for z in factors:
        rows = _interpolate(image, zoom_taps(h, z, centre), axis=0)
        acc = acc + _interpolate(rows, zoom_taps(w, z, centre), axis=1)
    return (image + acc) / (len(factors) + 1)


def _interpolate(x, taps, axis: int):
    """weight0 * x[index0] + weight1 * x[index1] along `axis` for `zoom_taps`' tables `taps`."""
    i0, i1, w0, w1 = taps
    shape = [1] * x.ndim
    shape[axis] = -1
    w0, w1 = (np.asarray(v, np.float32).reshape(shape) for v in (w0, w1))
    return w0 * jnp.take(x, i0, axis=axis) + w1 * jnp.take(x, i1, axis=axis)


# ------------------------------------------------------------------------------------------------- glass

def glass_shuffle_sources(h: int, w: int, max_delta: int, offsets):
    """For one pass of the reference's shuffle with `offsets` [H-2d, W-2d, 2] = (dx, dy) per visited
    pixel (its draw order), the flat index each pixel's final value is copied from, [H*W] int32.

    The visited pixels are the interior (H-2d) x (W-2d) block, numbered here in raster order. Each
    points either at an interior pixel whose final value it takes (a source visited before it, i.e. later
    in raster order: interior number < m = its size) or, as `flat index + m`, at the pixel whose original
    value it takes. Pointer jumping (`p = p[p]` while some p < m) resolves chains of length L in
    ceil(log2 L) rounds: with random offsets the longest chains of a 224 px image take 3-4 rounds,
    adversarial ones (a chain along a whole row) take up to log2(m). Working on the interior keeps the
    initial pointers one elementwise (vectorised) pass over the random offsets."""
    d = max_delta
    rows, cols = h - 2 * d, w - 2 * d
    m = rows * cols
    offsets = jnp.asarray(offsets, jnp.int32)[::-1, ::-1]  # raster order: pixel (d + 1 + i, d + 1 + j)
    dx, dy = offsets[..., 0], offsets[..., 1]
    i, j = np.arange(rows)[:, None] + dy, np.arange(cols)[None, :] + dx  # the source, interior coordinates
    visited_before = ((i >= 0) & (i < rows) & (j >= 0) & (j < cols)) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    pointer = jnp.where(visited_before, i * cols + j, (i + d + 1) * w + j + d + 1 + m).reshape(-1)

    def jump(state):
        pointer, _ = state
        pointer = jnp.where(pointer < m, jnp.take(pointer, pointer, mode="clip"), pointer)
        return pointer, jnp.any(pointer < m)

    # starting from True (at most one extra round) keeps the loop the only consumer of the initial
    # pointers, which XLA would otherwise recompute (random offsets included) for the predicate
    pointer, _ = jax.lax.while_loop(lambda state: state[1], jump, (pointer, True))
    interior = np.zeros((h, w), bool)
    interior[d + 1:h - d + 1, d + 1:w - d + 1] = True
    embedded = jnp.pad((pointer - m).reshape(rows, cols), ((d + 1, d - 1), (d + 1, d - 1)))
    return jnp.where(interior, embedded, np.arange(h * w).reshape(h, w)).reshape(-1)


def glass_sources(h: int, w: int, max_delta: int, offsets):
    """The flat index each pixel's final value comes from after all passes (`offsets` [passes, H-2d, W-2d, 2]):
    the passes' source maps composed (pass k reads what pass k-1 wrote: sources[...][s_k]), so the pixels
    move in one gather instead of one per pass."""
    sources = glass_shuffle_sources(h, w, max_delta, offsets[0])
    for i in range(1, offsets.shape[0]):
        sources = sources[glass_shuffle_sources(h, w, max_delta, offsets[i])]
    return sources


def _glass_offsets(key, h: int, w: int, max_delta: int, passes: int):
    shape = (passes, h - 2 * max_delta, w - 2 * max_delta, 2)
    return threefry.randint(key, shape, -max_delta, max_delta)  # numpy randint: high exclusive


def _blur_to_uint8_levels(image, sigma):
    return jnp.floor(filters.gaussian_filter(image, sigma) * 255.0) / 255.0  # the reference's np.uint8(x * 255)


def glass_blur_core(image, offsets, severity: int, params: str = "imagenet"):
    """The reference's glass blur with the shuffle offsets `offsets` [passes, H-2d, W-2d, 2] = (dx, dy),
    each in [-d, d)."""
    sigma, max_delta, _ = params_lib.pick(params, GLASS, "glass_blur")[severity - 1]
    h, w, c = image.shape
    x = _blur_to_uint8_levels(image, sigma)
    x = x.reshape(h * w, c)[glass_sources(h, w, max_delta, offsets)].reshape(h, w, c)
    return filters.gaussian_filter(x, sigma)


def glass_blur(key, image, severity: int, params: str = "imagenet"):
    _, max_delta, passes = params_lib.pick(params, GLASS, "glass_blur")[severity - 1]
    h, w = image.shape[:2]
    return glass_blur_core(image, _glass_offsets(key, h, w, max_delta, passes), severity, params)


def glass_blur_batch(key, images, severity: int, params: str = "imagenet"):
    """`glass_blur` of each image of `[B, H, W, 3]` with its key `threefry.image_keys(key, B)[i]` (what `corrupt`
    calls; the same values). The per-image steps are vmapped; the pixels of the whole batch move in one gather
    computed as a stage of its own (`stages.separately`): vmapped, XLA:CPU fused the gather with the two blurs'
    transposed layouts and it took 17 of the corruption's 47 ms (16 x 224 px)."""
    sigma, max_delta, passes = params_lib.pick(params, GLASS, "glass_blur")[severity - 1]
    b, h, w, c = images.shape
    sources = jax.vmap(lambda k: glass_sources(h, w, max_delta, _glass_offsets(k, h, w, max_delta, passes)))(
        threefry.image_keys(key, b)) + (np.arange(b) * (h * w))[:, None]
    x = jax.vmap(lambda im: _blur_to_uint8_levels(im, sigma))(images)
    moved = stages.separately(lambda x, s: x.reshape(b * h * w, c)[s.reshape(-1)].reshape(b, h, w, c), x, sources)
    return jax.vmap(lambda im: filters.gaussian_filter(im, sigma))(moved)


CORRUPTIONS = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
}
