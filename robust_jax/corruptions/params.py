"""Severity parameter sets: ImageNet-C's (the default, in each family module) and CIFAR-10-C's (here).

`params='imagenet'` uses the tables of the ImageNet-C generator as packaged in `imagecorruptions` (module
constants of `noise`, `blur`, `weather`, `spatter`, `digital`, `elastic`, `jpeg`). `params='cifar'` uses
the per-corruption parameters of Hendrycks & Dietterich's CIFAR-10-C generator, `make_cifar_c.py` in
github.com/hendrycks/robustness (folder ImageNet-C/create_c, read at commit
8190fe329f5f072a06e3a2aea02bb5dda69aed9f, 2022-08-24); the values below are transcribed from it (facts, no
code). `params='auto'` (resolved by `resolve`) picks 'cifar' for 32x32 images and 'imagenet' otherwise.

Where the CIFAR generator's algorithm differs from the ImageNet one beyond the numbers, the family modules
follow the CIFAR variant where it can be expressed (see docs/evaluation.md, "CIFAR-10-C parameters"):
- zoom blur and snow: CIFAR's `clipped_zoom` trims the zoomed crop centrally (`(out - H) // 2` rows/cols
  off the top/left) where imagecorruptions keeps the first H;
- pixelate: BOX down to `int(32 c)` then BOX (not NEAREST) back up;
- frost: the texture is subsampled by `cv2.resize(fx=fy=0.2)` (bilinear at an integer factor 5, i.e. pixel
  `5 i + 2`), one of the first FIVE textures (`randint(5)`), and a 32x32 window is cropped;
- elastic transform: a random affine warp (3 points moved by U(-a, a), `cv2.warpAffine`, bilinear,
  reflect-101) followed by the displacement field `alpha * gaussian(U(-1, 1), sigma)` (truncate 3, reflect);
  the ImageNet variant (imagecorruptions) has no affine step and scales its noise by the image height.
"""
from __future__ import annotations

import numpy as np

NAMES = ("imagenet", "cifar")
CHOICES = NAMES + ("auto",)

_IMSIZE = 32

CIFAR = {
    # noise
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std
    "shot_noise": (500, 250, 100, 75, 50),  # photons
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # s&p amount
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),  # std
    # blur
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),  # sigma
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, delta, passes
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    # weather
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # strength, wibble decay
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95),
             (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),  # mean, std, zoom, threshold, radius, sigma, image weight
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0),
                (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)),  # mean, std, sigma, threshold, s2, mud
    # digital
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),  # Pillow quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": ((_IMSIZE * 0, _IMSIZE * 0, _IMSIZE * 0.08),
                          (_IMSIZE * 0.05, _IMSIZE * 0.2, _IMSIZE * 0.07),
                          (_IMSIZE * 0.08, _IMSIZE * 0.06, _IMSIZE * 0.06),
                          (_IMSIZE * 0.1, _IMSIZE * 0.04, _IMSIZE * 0.05),
                          (_IMSIZE * 0.1, _IMSIZE * 0.03, _IMSIZE * 0.03)),  # alpha, sigma, affine shift
}

CIFAR_FROST_TEXTURES = 5
"""CIFAR-10-C draws the texture with `randint(5)`: frost6 is never used."""
CIFAR_FROST_SCALE = 0.2


def cifar_zoom_factors(severity: int) -> np.ndarray:
    """CIFAR-10-C's zoom-blur factors (numpy float64 `arange`s, as the generator builds them)."""
    return [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
            np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]


def check(params: str) -> str:
    """`params` if it names a concrete set ('imagenet' or 'cifar'); a clear ValueError otherwise."""
    if params not in NAMES:
        hint = " ('auto' must be resolved with corruptions.params.resolve first)" if params == "auto" else ""
        raise ValueError(f"unknown corruption parameter set {params!r}; known: {', '.join(NAMES)}{hint}")
    return params


def resolve(params: str, height: int, width: int) -> str:
    """'auto' -> 'cifar' for 32x32 images, else 'imagenet'; 'imagenet' / 'cifar' unchanged; else ValueError."""
    if params == "auto":
        return "cifar" if (int(height), int(width)) == (_IMSIZE, _IMSIZE) else "imagenet"
    if params not in NAMES:
        raise ValueError(f"unknown corruption parameter set {params!r}; choose one of {', '.join(CHOICES)}")
    return params


def pick(params: str, imagenet_table, name: str):
    """The severity table of corruption `name` in set `params` (`imagenet_table` for 'imagenet')."""
    return imagenet_table if check(params) == "imagenet" else CIFAR[name]
