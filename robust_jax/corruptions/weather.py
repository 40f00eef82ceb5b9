"""Weather corruptions of ImageNet-C: snow, frost, fog (here) and spatter (`spatter.py`).

Each is the reference's (`imagecorruptions`) algorithm with its severity table, in JAX, on one
`[H, W, 3]` float image in [0, 1]. Every random corruption is split into a deterministic core fed with
its random draws (`*_from_*`) and a public function that draws them from the JAX key, so the parity
tests can replay the reference's numpy draws through the core.

Deliberate differences from the reference: float32 arithmetic instead of float64 (a value within ~1e-5
of a grey level can truncate to the neighbouring level: measured at most 1 level, on < 0.5% of values);
draws come from `jax.random` with the reference's distributions; frost's texture photographs are not
shipped but looked up (`frost_textures`). Measured agreement: docs/corruptions/weather_digital.md.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robust_jax import stages
from robust_jax.corruptions import filters, frost_textures, resample, threefry
from robust_jax.corruptions import params as params_lib
from robust_jax.corruptions.spatter import spatter

# ------------------------------------------------------------------------------------------------ fog
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))


def fog_map_size(h: int, w: int) -> int:
    """The plasma map side: the next power of two >= max(H, W, 3) (the reference includes the channel
    count in the max)."""
    side = max(h, w, 3)
    return 1 << (side - 1).bit_length()


def plasma_draw_shapes(map_size: int):
    """Shapes of the uniform draws of the diamond-square algorithm, in the reference's order: per step
    size s = map_size, map_size/2, ..., 2, three (map_size/s)^2 draws (squares, then the two diamond
    sub-grids)."""
    shapes, step = [], map_size
    while step >= 2:
        n = map_size // step
        shapes += [(n, n)] * 3
        step //= 2
    return shapes


def _interleave(corners, left, top, centres):
    """The 2n x 2n grid with corners at (even, even), left-edge midpoints at (even, odd), top-edge
    midpoints at (odd, even) and centres at (odd, odd)."""
    n = corners.shape[0]
    even = jnp.stack([corners, left], axis=-1).reshape(n, 2 * n)
    odd = jnp.stack([top, centres], axis=-1).reshape(n, 2 * n)
    return jnp.stack([even, odd], axis=1).reshape(2 * n, 2 * n)


def plasma_fractal(uniforms, map_size: int, wibble_decay: float):
    """The reference's diamond-square heightmap (`plasma_fractal`) from `uniforms`, a list of arrays in
    [0, 1) shaped as `plasma_draw_shapes(map_size)`; returns `[map_size, map_size]` in [0, 1].

    Each new point is the mean of its 4 neighbours (toroidal, via roll) plus wibble * U(-wibble, wibble);
    wibble starts at 100 and is divided by `wibble_decay` per level. The reference fills a full-size
    array at stride `step`; here the grid of the points filled so far (`map[::step, ::step]`) is kept
    and refined by interleaving, which computes the same values without strided scatters."""
    grid = jnp.zeros((1, 1), jnp.float32)
    wibble, draw = 100.0, iter(uniforms)

    def wibbled_mean(total):
        u = next(draw)
        return total / 4 + wibble * (-wibble + 2.0 * wibble * u)

    while grid.shape[0] < map_size:
        corners = grid
        acc = corners + jnp.roll(corners, -1, axis=0)
        acc = acc + jnp.roll(acc, -1, axis=1)
        centres = wibbled_mean(acc)
        left = wibbled_mean((centres + jnp.roll(centres, 1, axis=0)) + (corners + jnp.roll(corners, -1, axis=1)))
        top = wibbled_mean((centres + jnp.roll(centres, 1, axis=1)) + (corners + jnp.roll(corners, -1, axis=0)))
        grid = _interleave(corners, left, top, centres)
        wibble /= wibble_decay
    grid = grid - grid.min()
    return grid / grid.max()


def fog_from_plasma(image, plasma, severity: int, params: str = "imagenet"):
    """Adds `c * plasma[:H, :W]` to every channel and rescales by max / (max + c) (max of the image)."""
    c, _ = params_lib.pick(params, FOG, "fog")[severity - 1]
    h, w = image.shape[:2]
    peak = jnp.max(image)
    return (image + c * plasma[:h, :w, None]) * peak / (peak + c)


def fog(key, image, severity: int, params: str = "imagenet"):
    """ImageNet-C fog: a plasma fractal haze (sequential over the log2(map) levels, vectorised within).
    CIFAR-10-C's map is 32x32, which `fog_map_size` also gives for 32x32 images."""
    h, w = image.shape[:2]
    size = fog_map_size(h, w)
    shapes = plasma_draw_shapes(size)
    flat = jax.random.uniform(key, (sum(a * b for a, b in shapes),))  # one draw, split by shape
    offsets = [0]
    for a, b in shapes:
        offsets.append(offsets[-1] + a * b)
    uniforms = [flat[o:o + a * b].reshape(a, b) for o, (a, b) in zip(offsets, shapes)]
    decay = params_lib.pick(params, FOG, "fog")[severity - 1][1]
    return fog_from_plasma(image, plasma_fractal(uniforms, size, decay), severity, params)


# ---------------------------------------------------------------------------------------------- frost
FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))


def frost_from_crop(image, crop, severity: int, params: str = "imagenet"):
    """`c0 * image + c1 * crop` with `crop` the uint8-valued texture window `[H, W, 3]` (RGB)."""
    a, b = params_lib.pick(params, FROST, "frost")[severity - 1]
    return a * image + b * (crop.astype(jnp.float32) / 255.0)


def frost_crop(key, h: int, w: int, directory=None, params: str = "imagenet"):
    """A random texture window as the reference draws it: texture index in 0..5 (CIFAR-10-C: 0..4), then
    row and column offsets uniform in [0, rows - H) and [0, cols - W) of the resized texture (CIFAR-10-C:
    the texture subsampled by 5, see `frost_textures.cifar_textures`)."""
    if params_lib.check(params) == "cifar":
        stack, sizes = frost_textures.cifar_textures(directory)
    else:
        stack, sizes = frost_textures.resized_textures(h, w, directory)
    k_index, k_row, k_col = jax.random.split(key, 3)
    index = jax.random.randint(k_index, (), 0, len(sizes))
    size = jnp.asarray(sizes)[index]
    row = jax.random.randint(k_row, (), 0, size[0] - h)
    col = jax.random.randint(k_col, (), 0, size[1] - w)
    window = jax.lax.dynamic_slice(jnp.asarray(stack), (index, row, col, 0), (1, h, w, 3))
    return window[0]


def frost(key, image, severity: int, params: str = "imagenet"):
    """ImageNet-C frost. Needs the texture photographs (see `frost_textures`): they are read and resized
    on the host when the function is traced."""
    h, w = image.shape[:2]
    return frost_from_crop(image, frost_crop(key, h, w, params=params), severity, params)


# ----------------------------------------------------------------------------------------------- snow
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
"""(flake mean, flake std, zoom, threshold, blur radius, blur sigma, image weight) per severity."""


def clipped_zoom(x, zoom: float):
    """The reference's `clipped_zoom`: the centred `ceil(n / zoom)` crop of axes 0 and 1, zoomed back up
    by `zoom` with scipy's linear `zoom` (the result may exceed the input size by a pixel or two; the
    caller crops)."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / float(zoom)), math.ceil(w / float(zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    return resample.zoom_linear(x[top:top + ch, left:left + cw], zoom)


def snow_from_draws(image, flakes, angle, severity: int, params: str = "imagenet"):
    """Snow from `flakes` [H, W] (Gaussian noise with the severity's mean and std) and the blur `angle`
    in degrees (the reference draws it uniform in [-135, -45]).

    Flakes: zoomed in (clipped_zoom), thresholded, clipped, motion-blurred along `angle`, rounded to
    uint8 levels and cropped; the image is lightened toward max(x, 1.5 gray + 0.5), and the flake layer
    is added together with its 180-degree rotation.

    CIFAR-10-C: the zoomed field is trimmed centrally to H x W first (its `clipped_zoom`), and the layer is
    truncated to uint8 (its PNG hand-over to ImageMagick) before the motion blur."""
    mean, std, zoom, threshold, radius, sigma, weight = params_lib.pick(params, SNOW, "snow")[severity - 1]
    del mean, std
    h, w = image.shape[:2]
    layer = clipped_zoom(flakes[..., None], zoom)[..., 0]
    if params == "cifar":
        top, left = (layer.shape[0] - h) // 2, (layer.shape[1] - w) // 2
        layer = layer[top:top + h, left:left + w]
    layer = jnp.clip(jnp.where(layer < threshold, 0.0, layer), 0.0, 1.0)
    if params == "cifar":
        layer = jnp.floor(layer * 255.0) / 255.0
    # the rounded layer is written out once: fused into `layer + layer[::-1, ::-1]` below, XLA:CPU
    # recomputed the motion blur's taps for each use, ~15x slower (16 x 224 px)
    layer = stages.separately_batched(lambda v: jnp.round(v * 255.0) / 255.0)(
        filters.motion_blur(layer, radius, sigma, angle))[:h, :w, None]
    gray = resample.rgb_to_gray(image)[..., None]
    lit = weight * image + (1.0 - weight) * jnp.maximum(image, gray * 1.5 + 0.5)
    return lit + layer + layer[::-1, ::-1]


def snow(key, image, severity: int, params: str = "imagenet"):
    """ImageNet-C snow with the flake field and blur angle drawn from `key`."""
    mean, std = params_lib.pick(params, SNOW, "snow")[severity - 1][:2]
    k_flakes, k_angle = jax.random.split(key)
    flakes = mean + std * threefry.normal(k_flakes, image.shape[:2])
    angle = jax.random.uniform(k_angle, (), minval=-135.0, maxval=-45.0)
    return snow_from_draws(image, flakes, angle, severity, params)


CORRUPTIONS = {"snow": snow, "frost": frost, "fog": fog, "spatter": spatter}
