"""Image filters shared by the corruptions, with the boundary semantics of scipy.ndimage and OpenCV.

The ImageNet-C generator (`imagecorruptions`) builds its corruptions from a few numpy/scipy/cv2 filters.
This module reimplements them in JAX so that every corruption is jit-able on static shapes and runs on
accelerators. Filter constants (kernel taps, boundary index maps) depend only on static shapes and
Python-number parameters, so they are computed once on the host with numpy; the pixel work is JAX.

Stable public API (imported by the other corruption families):

- `gaussian_filter(x, sigma, *, mode='nearest', truncate=4.0) -> array`
  Gaussian blur over axes 0 and 1 of `x` (`[H, W]` or `[H, W, C]`; trailing axes untouched) exactly as
  `scipy.ndimage.gaussian_filter` / `skimage.filters.gaussian(..., channel_axis=-1)` compute it:
  a separable sampled Gaussian `exp(-t^2 / (2 sigma^2))`, t = -r..r with r = int(truncate * sigma + 0.5),
  normalised to sum 1, applied axis 0 then axis 1. `sigma` is a number or a pair (per axis); 0 skips an
  axis. `mode` is a scipy.ndimage boundary mode (see `boundary_index`). skimage's default mode is
  'nearest', its default truncate 4.0.
- `correlate2d(x, kernel, *, mode='mirror') -> array`
  `cv2.filter2D(x, -1, kernel)` per channel: 2-D correlation (no kernel flip) anchored at the kernel
  centre; cv2's default border BORDER_REFLECT_101 is scipy's 'mirror'. Kernels above 7x7 go through
  the FFT (as OpenCV's do through its DFT), smaller ones through a direct convolution.
- `disk_kernel(radius, alias_blur) -> np.ndarray` the reference's antialiased disk (defocus blur).
- `motion_blur_kernel(radius, sigma) -> np.ndarray` the reference's one-sided Gaussian tap weights.
- `motion_blur(x, radius, sigma, angle) -> array` the reference's `_motion_blur`: a weighted sum of
  copies of `x` shifted along a line at `angle` degrees (a traced scalar, so the angle can be random),
  with edge-replicating shifts; `x` is `[H, W]` or `[H, W, C]`.
- `boundary_index(index, n, mode) -> np.ndarray` the source index of (possibly out-of-range) integer
  positions under a boundary mode; -1 for 'constant' (zero fill).

Boundary modes, scipy.ndimage names (OpenCV / numpy.pad equivalents):
'reflect' d c b a | a b c d (BORDER_REFLECT / 'symmetric'), 'mirror' d c b | a b c d
(BORDER_REFLECT_101 / 'reflect'), 'nearest' a a a | a b c d (BORDER_REPLICATE / 'edge'),
'wrap' (BORDER_WRAP), 'constant' 0 0 0 | a b c d. Extensions longer than the image repeat the pattern
periodically, as scipy and cv2's borderInterpolate do.

Numerical difference from the reference: the references compute in float64, these filters in float32
(matrix products at `Precision.HIGHEST` so TPUs do not drop to bfloat16); the difference is ~1e-7
(up to ~4e-7 through the FFT).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
_HIGHEST = jax.lax.Precision.HIGHEST


def boundary_index(index, n: int, mode: str) -> np.ndarray:
    """Maps integer positions (any range) onto [0, n) under a scipy.ndimage boundary mode; -1 = zero."""
    i = np.asarray(index, dtype=np.int64)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":
        j = np.mod(i, 2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        j = np.mod(i, 2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    raise ValueError(f"unknown boundary mode {mode!r}; known: {', '.join(MODES)}")


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's sampled, normalised 1-D Gaussian: taps t = -r..r, r = int(truncate*sigma + 0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * t * t / float(sigma) ** 2)
    return w / w.sum()


def correlation_matrix(n: int, taps: np.ndarray, mode: str) -> np.ndarray:
    """The [n, n] matrix M with (M @ v)[i] = sum_k taps[k] * v_ext[i + k - r] for the 1-D correlation of
    a length-n signal with odd-length `taps` under boundary `mode` (host-side, float64)."""
    taps = np.asarray(taps, dtype=np.float64)
    r = (len(taps) - 1) // 2
    rows = np.repeat(np.arange(n), len(taps))
    src = boundary_index(rows + np.tile(np.arange(len(taps)) - r, n), n, mode)
    weights = np.tile(taps, n)
    keep = src >= 0
    m = np.zeros((n, n), dtype=np.float64)
    np.add.at(m, (rows[keep], src[keep]), weights[keep])
    return m


def _apply_along(x, matrix: np.ndarray, axis: int):
    """Applies a host [n, n] matrix along axis 0 or 1 of x (float32, full precision)."""
    m = jnp.asarray(matrix, dtype=jnp.float32)
    if axis == 0:
        return jnp.tensordot(m, x, axes=(1, 0), precision=_HIGHEST)
    return jnp.moveaxis(jnp.tensordot(m, x, axes=(1, 1), precision=_HIGHEST), 0, 1)


def band_block(radius: int) -> int:
    """Outputs per block of `correlate_along`'s banded product for taps of `radius`: the fastest of 8-128 for
    16 x 224 px x 3 images on 2 cores (benchmarks/README.md, "Banded gaussian blur")."""
    return 32 if radius <= 12 else 64


def correlate_along(x, taps: np.ndarray, mode: str, axis: int, block: int | None = None):
    """1-D correlation of axis 0 or 1 of `x` with odd-length `taps` under boundary `mode` (float32, full
    precision): `correlation_matrix`'s product, computed blockwise where the axis is long.

    The dense [n, n] matrix is banded (2r+1 of n entries per row are taps); on long axes, where it wastes
    most of its multiplies (n = 224, r = 4: 96%), each block of `block` outputs is instead the product of one
    shared [block, block + 2r] band with its window of the boundary-extended input, gathered at static
    indices: 2.5-3x faster at r = 4, 2x at r = 12, 1.4x at r = 24 (64-wide blocks). The same terms are
    summed; only the order of the float32 additions differs (~1e-7)."""
    taps = np.asarray(taps, np.float64)
    n, r = x.shape[axis], (len(taps) - 1) // 2
    block = block or band_block(r)
    if n <= 2 * block:
        return _apply_along(x, correlation_matrix(n, taps, mode), axis)
    blocks, window = -(-n // block), block + 2 * r
    # source of every window position; positions past n + r only feed outputs past n, which are dropped
    src = boundary_index(np.arange(blocks)[:, None] * block + np.arange(window)[None, :] - r, n, mode)
    if mode == "constant":  # index -1 -> a row of zeros in front
        x = jnp.pad(x, [(1, 0) if a == axis else (0, 0) for a in range(x.ndim)])
        src = src + 1
    windows = jnp.take(x, src.reshape(-1), axis=axis)
    windows = windows.reshape(x.shape[:axis] + (blocks, window) + x.shape[axis + 1:])
    band = np.zeros((block, window), np.float32)
    for i in range(block):
        band[i, i:i + 2 * r + 1] = taps
    y = jnp.moveaxis(jnp.tensordot(windows, band, axes=((axis + 1,), (1,)), precision=_HIGHEST), -1, axis + 1)
    y = y.reshape(x.shape[:axis] + (blocks * block,) + x.shape[axis + 1:])
    return jax.lax.slice_in_dim(y, 0, n, axis=axis)


def gaussian_filter(x, sigma, *, mode: str = "nearest", truncate: float = 4.0):
    """Gaussian blur of axes 0 and 1 of `x` with scipy.ndimage.gaussian_filter semantics (see module)."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 2:
        raise ValueError(f"gaussian_filter expects [H, W, ...], got shape {x.shape}")
    sigmas = (sigma, sigma) if np.ndim(sigma) == 0 else tuple(sigma)
    if len(sigmas) != 2:
        raise ValueError(f"sigma must be a number or a pair, got {sigma!r}")
    for axis, s in enumerate(sigmas):
        if float(s) > 0:
            x = correlate_along(x, gaussian_kernel1d(float(s), truncate), mode, axis)
    return x


def _pad2d(x, ry: int, rx: int, mode: str):
    """Extends axes 0/1 of x by ry/rx pixels each side under `mode` (static-index gathers)."""
    h, w = x.shape[:2]
    iy = boundary_index(np.arange(-ry, h + ry), h, mode)
    ix = boundary_index(np.arange(-rx, w + rx), w, mode)
    if mode == "constant":
        xp = jnp.pad(x, ((1, 0), (1, 0)) + ((0, 0),) * (x.ndim - 2))  # index -1 -> row/col of zeros
        return jnp.take(jnp.take(xp, iy + 1, axis=0), ix + 1, axis=1)
    return jnp.take(jnp.take(x, iy, axis=0), ix, axis=1)


def correlate2d(x, kernel, *, mode: str = "mirror"):
    """`cv2.filter2D(x, -1, kernel)` on each channel of `x` [H, W] or [H, W, C]: correlation with an
    odd-sized 2-D kernel anchored at its centre; default border BORDER_REFLECT_101 ('mirror').

    Like OpenCV, kernels larger than 7x7 (the defocus disks, 17x17 and 21x21) go through the DFT:
    XLA:CPU's single-channel convolution is ~7x slower than the FFT route at 224 px, and the FFT's
    float32 round-off (~4e-7 on [0,1] images) is far below a uint8 level. Small kernels use a direct
    convolution, exact for small integer kernels."""
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"correlate2d needs an odd-sized kernel, got {kernel.shape}")
    x = jnp.asarray(x, jnp.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    h, w = x.shape[:2]
    xp = _pad2d(x, kh // 2, kw // 2, mode)
    if kh * kw > 49:
        # convolution with the flipped kernel = correlation; keep the 'valid' part. A circular convolution
        # of any length N >= the padded image's wraps around only into its first kh - 1 outputs, which are
        # dropped, so N is the next FFT-friendly length (factors 2, 3, 5) rather than the full linear size
        # (224 px with a 17x17 disk: 240 instead of 256, 2-19% faster in four interleaved runs)
        size = tuple(scipy.fft.next_fast_len(n, real=True) for n in xp.shape[:2])
        kf = jnp.fft.rfft2(jnp.asarray(kernel[::-1, ::-1], jnp.float32), size)
        full = jnp.fft.irfft2(jnp.fft.rfft2(xp, size, axes=(0, 1)) * kf[..., None], size, axes=(0, 1))
        out = full[kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]
    else:
        lhs = jnp.moveaxis(xp, -1, 0)[..., None]  # [C, H+2r, W+2r, 1]: channels as batch
        rhs = jnp.asarray(kernel, jnp.float32)[:, :, None, None]
        out = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
        out = jnp.moveaxis(out[..., 0], 0, -1)
    return out[..., 0] if squeeze else out


def _cv2_gaussian_blur_host(img: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur(img, (ksize, ksize), sigma) in numpy (host): separable kernel
    exp(-(i - (ksize-1)/2)^2 / (2 sigma^2)) normalised, BORDER_REFLECT_101."""
    t = np.arange(ksize) - (ksize - 1) / 2.0
    g = np.exp(-t * t / (2.0 * sigma * sigma))
    g /= g.sum()
    out = img.astype(np.float64)
    for axis in (1, 0):
        out = np.moveaxis(correlation_matrix(out.shape[axis], g, "mirror") @ np.moveaxis(out, axis, 0), 0, axis)
    return out


def disk_kernel(radius: float, alias_blur: float = 0.1) -> np.ndarray:
    """The reference's defocus kernel: the 0/1 disk x^2 + y^2 <= radius^2 on a (2*max(8, radius)+1)^2 grid,
    normalised, then antialiased by cv2.GaussianBlur with a 3x3 (radius <= 8) or 5x5 kernel and sigma
    `alias_blur` (border reflect-101). Host-side float32 constant, as the reference's."""
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    t = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(t, t)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= np.sum(disk)
    return _cv2_gaussian_blur_host(disk, ksize, alias_blur).astype(np.float32)


def motion_blur_kernel(radius: int, sigma: float) -> np.ndarray:
    """The reference's motion-blur weights: width = 2*radius + 1 samples of a zero-mean Gaussian of
    std `sigma` at t = 0..width-1 (one-sided), normalised to sum 1."""
    width = 2 * int(radius) + 1
    t = np.arange(width, dtype=np.float64)
    k = np.exp(-t * t / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
    return k / k.sum()


def motion_shifts(width: int, angle):
    """The (dy, dx) integer shift of each of the `width` taps for a blur direction of `angle` degrees:
    dy_i = -ceil(i sin(a) - 1/2), dx_i = -ceil(i cos(a) - 1/2), as the reference computes them (it
    divides i * width * (sin, cos) by hypot(width sin, width cos) = width)."""
    a = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
    i = jnp.arange(width, dtype=jnp.float32)
    dy = -jnp.ceil(i * jnp.sin(a) - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * jnp.cos(a) - 0.5).astype(jnp.int32)
    return dy, dx


def motion_blur(x, radius: int, sigma: float, angle):
    """The reference's `_motion_blur(x, radius, sigma, angle)` on `x` [H, W] or [H, W, C].

    out = sum_i k_i * shift(x, dx_i, dy_i), k = `motion_blur_kernel(radius, sigma)`, shifts from
    `motion_shifts`; shift(x, dx, dy)[h, w] = x[clip(h - dy), clip(w - dx)] (the reference's roll plus
    edge fill). The reference stops summing at the first tap whose |dy| >= H or |dx| >= W (the motion
    left the image) without renormalising; so does this. `angle` may be traced (random): each tap is a
    dynamic slice of the edge-padded image (a contiguous window, which XLA:CPU sums for all taps in one
    vectorised pass; per-pixel clipped gathers took 2.4x as long for 16 x 224 px)."""
    x = jnp.asarray(x, jnp.float32)
    h, w = x.shape[:2]
    k = jnp.asarray(motion_blur_kernel(radius, sigma), jnp.float32)
    width = k.shape[0]
    dy, dx = motion_shifts(width, angle)
    inside = (jnp.abs(dy) < h) & (jnp.abs(dx) < w)
    k = k * jnp.cumprod(inside.astype(jnp.float32))  # zero from the first tap that leaves the image on
    pad = width - 1  # |dy|, |dx| <= width - 1: every window lies inside the padded image
    channels = ((0, 0),) * (x.ndim - 2)
    padded = jnp.pad(x, ((pad, pad), (pad, pad)) + channels, mode="edge")  # edge fill = clipped indices
    out = jnp.zeros_like(x)
    for i in range(width):
        start = (pad - dy[i], pad - dx[i]) + (0,) * (x.ndim - 2)
        out = out + k[i] * jax.lax.dynamic_slice(padded, start, x.shape)
    return out
