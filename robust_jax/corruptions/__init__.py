"""Common corruptions (Hendrycks & Dietterich 2019, ImageNet-C) computed on the fly in JAX.

`corrupt(key, images, name, severity)` corrupts a batch `[B, H, W, C]` of float images in [0,1]
(C = 1 or 3) with one of the 19 corruptions at severity 1..5 and returns float images in [0,1] of the
same shape. It is jit-able with `name` and `severity` static, runs on the accelerator, and needs no
ImageNet-C download. Severity parameters are those of the ImageNet-C generator as packaged in
`imagecorruptions` (the parity reference, see docs/corruptions.md for the agreement of each corruption) by
default; `params='cifar'` selects CIFAR-10-C's (Hendrycks & Dietterich's `make_cifar_c.py`, see `params.py`)
and `params='auto'` picks 'cifar' for 32x32 images, 'imagenet' otherwise.

Each family module (`noise`, `blur`, `weather`, `digital`) exports `CORRUPTIONS = {name: fn}` with
`fn(key, image, severity, params='imagenet') -> image` on one `[H, W, 3]` float32 image in [0,1],
severity a Python int, `params` the parameter set ('imagenet' or 'cifar').

`jit(name, severity)` is `corrupt` for one corruption jitted on its own, with the XLA:CPU options measured
faster for that program (`CPU_COMPILER_OPTIONS`); the corruption evaluation and the throughput benchmark use it.
"""
from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from robust_jax import compile_options
from robust_jax.corruptions import blur, digital, jpeg, noise, params as params_lib, threefry, weather

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
"""The 15 corruptions of the mCE benchmark, in the order of the ImageNet-C paper."""
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out ("validation") corruptions; not part of mCE."""
ALL = BENCHMARK + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

_FUNCTIONS = {**noise.CORRUPTIONS, **blur.CORRUPTIONS, **weather.CORRUPTIONS, **digital.CORRUPTIONS}
_BATCHED = {digital.pixelate: digital.pixelate_batch, digital.jpeg_compression: jpeg.jpeg_compression_batch,
            blur.glass_blur: blur.glass_blur_batch}
"""Per-image function -> whole-batch implementation `fn(key, images [B,H,W,3], severity, params)` of the same
deterministic corruption, which `corrupt` calls instead of vmapping (faster on XLA:CPU, same values)."""


_ELEMENTAL_EMITTER = {"xla_cpu_use_fusion_emitters": False}
CPU_COMPILER_OPTIONS = {"zoom_blur": _ELEMENTAL_EMITTER, "snow": _ELEMENTAL_EMITTER}
"""Per-corruption XLA options for `jit` on CPU (jaxlib 0.10.x; `robust_jax.compile_options.applicable`): XLA's
elemental loop emitter instead of its MLIR fusion emitters. Zoom blur's eleven unrolled two-tap gathers and
snow's flake layers run as one fused loop either way, and the elemental emitter's loop is faster: 16 images of
224 px, severity 3, on a 2-core AMD EPYC (Zen 3), interleaved medians: zoom blur 29.6 -> 18.6 and 34.1 -> 20.0
ms, snow 8.2 -> 5.4 and 8.7 -> 5.9 ms, the same bits. Most others are within noise of either emitter; spatter
(32.9 -> 58.9 ms), elastic (15.0 -> 18.9) and JPEG (4.1 -> 6.1) are slower with it (benchmarks/README.md)."""

PARAMS = params_lib.CHOICES
"""Parameter sets: 'imagenet' (ImageNet-C), 'cifar' (CIFAR-10-C), 'auto' (cifar at 32x32, else imagenet)."""


def _takes_params(fn) -> bool:
    """Whether a per-image function accepts `params` (ours all do; a user's stand-in `fn(key, image,
    severity)`, e.g. registered in `_FUNCTIONS` by a test, has one parameter set and is called without)."""
    try:
        return "params" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def get(name: str):
    """The per-image function `fn(key, image [H,W,3], severity, params='imagenet') -> image` of `name`."""
    if name not in ALL:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(ALL)}")
    if name not in _FUNCTIONS:
        raise NotImplementedError(f"corruption {name!r} is not implemented yet")
    return _FUNCTIONS[name]


def _checked(name: str, severity: int):
    """The per-image function of `name` (`get`), after checking `severity`."""
    fn = get(name)
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return fn


def corrupt(key, images, name: str, severity: int, *, quantize: bool = True, params: str = "imagenet"):
    """Corrupts a batch `[B, H, W, C]` (C in {1, 3}, float in [0,1]) with `name` at `severity` (1..5).

    `params` picks the severity parameters: 'imagenet' (ImageNet-C, the default), 'cifar' (CIFAR-10-C) or
    'auto' ('cifar' when the images are 32x32, else 'imagenet'); anything else raises ValueError.

    Each image gets its own randomness (`fold_in(key, index)`). Grey images are corrupted as three equal
    channels and averaged back. `quantize=True` rounds the result down to the 256 levels of a uint8
    image, as the reference's `np.uint8(...)` does, so numbers are comparable with ImageNet-C files.
    The floor is taken of `255 * out + 1e-4`: float32 lands up to ~3e-5 below an integer level where the
    reference's float64 is exact (e.g. a blur of a flat region), and the guard keeps those on level k;
    where the reference's own float64 rounding lands just below k it truncates to k - 1 and the two
    differ by one level (agreement per corruption: docs/corruptions/)."""
    fn = _checked(name, severity)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images [B, H, W, 1 or 3], got shape {tuple(images.shape)}")
    params = params_lib.resolve(params, images.shape[1], images.shape[2])
    channels = images.shape[-1]
    x = images.astype(jnp.float32)
    if channels == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if fn in _BATCHED:
        out = _BATCHED[fn](key, x, severity, params=params)
    else:
        if _takes_params(fn):
            fn = functools.partial(fn, params=params)
        out = jax.vmap(lambda k, im: fn(k, im, severity))(threefry.image_keys(key, x.shape[0]), x)
    out = jnp.clip(out, 0.0, 1.0)
    if quantize:
        out = jnp.floor(out * 255.0 + 1e-4) / 255.0
    if channels == 1:  # the mean of three values in [0,1] can round to 1 + 1 ulp
        out = jnp.clip(jnp.mean(out, axis=-1, keepdims=True), 0.0, 1.0)
    return out.astype(images.dtype)


def jit(name: str, severity: int, *, quantize: bool = True, params: str = "imagenet"):
    """`corrupt(key, images, name, severity, quantize=..., params=...)` as a jitted function of `(key, images)`,
    compiled with `CPU_COMPILER_OPTIONS[name]` where they apply (CPU, a measured jaxlib, the package's compile
    switch on: `robust_jax.compile_options`); same values as `jax.jit` of `corrupt`."""
    _checked(name, severity)
    return compile_options.jit(
        lambda key, images: corrupt(key, images, name, severity, quantize=quantize, params=params),
        cpu_options=CPU_COMPILER_OPTIONS.get(name, {}))
