"""Digital corruptions of ImageNet-C: brightness, contrast, saturate, pixelate (here), JPEG
(`jpeg.py`) and elastic transform (`elastic.py`).

Each is the reference's (`imagecorruptions`) algorithm with its severity table, written in JAX for one
`[H, W, 3]` float image in [0, 1]; the result is clipped/quantised by `corrupt`. Colour conversions
follow scikit-image (`resample.rgb_to_hsv`), resizing follows Pillow (`resample.pil_resize_*`).
Deliberate difference: the reference computes in float64, these in float32, so a value that lands
within ~1e-5 of a grey level can round to the neighbouring level (see docs/corruptions/weather_digital.md).
"""
from __future__ import annotations

import jax.numpy as jnp

from robust_jax import stages
from robust_jax.corruptions import params as params_lib
from robust_jax.corruptions import resample
from robust_jax.corruptions.elastic import elastic_transform
from robust_jax.corruptions.jpeg import jpeg_compression

BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)


def brightness(key, image, severity: int, params: str = "imagenet"):
    """Adds `c` to the HSV value channel (clipped to [0, 1]) and converts back (skimage HSV)."""
    del key
    h, s, v = resample.hsv_channels(image)
    value = jnp.clip(v + params_lib.pick(params, BRIGHTNESS, "brightness")[severity - 1], 0.0, 1.0)
    return resample.rgb_from_hsv_channels(h, s, value)


def contrast(key, image, severity: int, params: str = "imagenet"):
    """Scales each channel's deviation from its spatial mean by `c`."""
    del key
    mean = jnp.mean(image, axis=(0, 1), keepdims=True)
    return (image - mean) * params_lib.pick(params, CONTRAST, "contrast")[severity - 1] + mean


def saturate(key, image, severity: int, params: str = "imagenet"):
    """HSV saturation `s -> clip(s * a + b, 0, 1)` (skimage HSV)."""
    del key
    a, b = params_lib.pick(params, SATURATE, "saturate")[severity - 1]
    h, s, v = resample.hsv_channels(image)
    return resample.rgb_from_hsv_channels(h, jnp.clip(s * a + b, 0.0, 1.0), v)


def pixelate_batch(key, images, severity: int, params: str = "imagenet"):
    """`pixelate` of a batch `[B, H, W, 3]` at once (what `corrupt` calls).

    Pillow BOX downsizing to `int(side * c)` then back to the original size, on the uint8 image
    (`round(255 x)`, the reference's input), with Pillow's fixed-point arithmetic: exact. ImageNet-C
    resizes back with NEAREST, CIFAR-10-C with BOX again. The downsizing is compiled apart from the resize
    back up (`stages.separately`), which XLA:CPU would otherwise fuse with it, recomputing the box sums
    for every output pixel."""
    del key
    h, w = images.shape[-3:-1]
    c = params_lib.pick(params, PIXELATE, "pixelate")[severity - 1]

    def down(batch):
        pixels = jnp.round(jnp.clip(batch, 0.0, 1.0) * 255.0).astype(jnp.int32)
        return resample.pil_resize_box_uint8(pixels, int(h * c), int(w * c), axes=(1, 2))

    small = stages.separately(down, images)
    if params == "cifar":
        return resample.pil_resize_box_uint8(small, h, w, axes=(1, 2)).astype(jnp.float32) / 255.0
    return resample.pil_resize_nearest(small, h, w, axes=(1, 2)).astype(jnp.float32) / 255.0


def pixelate(key, image, severity: int, params: str = "imagenet"):
    """Pixelate one `[H, W, 3]` image (see `pixelate_batch`; same values)."""
    return pixelate_batch(key, image[None], severity, params)[0]


CORRUPTIONS = {
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "saturate": saturate,
}
