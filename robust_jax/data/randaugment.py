"""timm's RandAugment (`rand-m9-mstd0.5-inc1`, the DeiT recipe) as TensorFlow ops inside tf.data.

Policy strings follow timm: `rand` then dash-separated parts `m<magnitude>`, `n<ops per image>` (default 2),
`mstd<magnitude std>` (default 0), `mmax<upper bound>` (default 10), `inc<0|1>` (the increasing-severity
op set). Per image: `n` ops drawn uniformly with replacement from the 15-op set; each applies with
probability 0.5 with magnitude ~ N(m, mstd) clipped to [0, mmax]; signed ops negate with probability 1/2.
Colour ops reproduce PIL on the 0-255 scale (truncation where PIL truncates); geometric ops fill with the
ImageNet mean (124, 116, 104) as timm's DeiT transforms do.

Differences from timm, documented: the geometric ops (rotate, shear, translate) interpolate bilinearly
where DeiT's timm uses PIL's bicubic (TensorFlow's image warp has no bicubic mode); the random draws come
from stateless per-example seeds, not Python's `random`.
"""
from __future__ import annotations

import math
import re

from robust_jax.data.tf_runtime import tf

MAX_LEVEL = 10.0
FILL = (124.0, 116.0, 104.0)  # timm: round(255 * IMAGENET_DEFAULT_MEAN)
TRANSLATE_PCT = 0.45

INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
ORIGINAL_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def parse_policy(policy: str) -> dict:
    """'rand-m9-mstd0.5-inc1' -> {'magnitude': 9.0, 'num_ops': 2, 'magnitude_std': 0.5, 'magnitude_max': 10.0,
    'increasing': True}; a ValueError names any part it does not know."""
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"data.randaugment must start with 'rand' (timm's RandAugment), got {policy!r}")
    out = dict(magnitude=MAX_LEVEL, num_ops=2, magnitude_std=0.0, magnitude_max=MAX_LEVEL, increasing=False)
    for part in parts[1:]:
        m = re.fullmatch(r"(mstd|mmax|inc|m|n)([0-9.]+|inf)", part)
        if not m:
            raise ValueError(f"unknown part {part!r} in data.randaugment={policy!r} (known: m, n, mstd, mmax, inc; "
                             "the choice weights 'w' are not supported)")
        key, value = m.groups()
        if key == "m":
            out["magnitude"] = float(value)
        elif key == "n":
            out["num_ops"] = int(value)
        elif key == "mstd":
            out["magnitude_std"] = float(value)
        elif key == "mmax":
            out["magnitude_max"] = float(value)
        else:
            out["increasing"] = bool(int(value))
    return out


# --- colour ops on float32 images holding integers 0..255 ----------------------------------------------------
def _blend(degenerate, image, factor):
    """PIL Image.blend(degenerate, image, factor) for 8-bit images: truncated, clipped to [0, 255]."""
    return tf.clip_by_value(tf.floor(degenerate + factor * (image - degenerate)), 0.0, 255.0)


def _grey(image):
    """PIL's convert('L'): (R*19595 + G*38470 + B*7471 + 2^15) >> 16."""
    r, g, b = tf.unstack(image, axis=-1)
    return tf.floor((r * 19595.0 + g * 38470.0 + b * 7471.0 + 32768.0) / 65536.0)


def auto_contrast(image):
    lo = tf.reduce_min(image, axis=(0, 1))
    hi = tf.reduce_max(image, axis=(0, 1))
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    out = tf.clip_by_value(tf.floor(image * scale - lo * scale), 0.0, 255.0)
    return tf.where(hi > lo, out, image)


def _equalize_channel(c):
    values = tf.cast(c, tf.int32)
    hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    last = nonzero[-1]
    step = (tf.reduce_sum(hist) - last) // 255
    safe = tf.maximum(step, 1)
    lut = tf.minimum((step // 2 + tf.cumsum(hist, exclusive=True)) // safe, 255)
    out = tf.cast(tf.gather(lut, values), tf.float32)
    return tf.where((tf.size(nonzero) <= 1) | (step == 0), c, out)


def equalize(image):
    return tf.stack([_equalize_channel(image[..., i]) for i in range(3)], axis=-1)


def posterize(image, bits):
    shift = tf.cast(tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32)), tf.float32)
    return tf.where(bits >= 8, image, tf.floor(image / shift) * shift)


def solarize(image, threshold):
    return tf.where(image < threshold, image, 255.0 - image)


def solarize_add(image, add, threshold=128.0):
    return tf.where(image < threshold, tf.minimum(image + add, 255.0), image)


def color(image, factor):
    return _blend(tf.repeat(_grey(image)[..., None], 3, axis=-1), image, factor)


def contrast(image, factor):
    mean = tf.floor(tf.reduce_mean(_grey(image)) + 0.5)
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """PIL's SMOOTH filter (3x3, centre 5, others 1, /13, rounded) as the degenerate; borders unchanged."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.floor(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0] + 0.5)
    smooth = tf.clip_by_value(smooth, 0.0, 255.0)
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    inner = tf.pad(tf.ones([h - 2, w - 2, 1]), [[1, 1], [1, 1], [0, 0]]) > 0
    return _blend(tf.where(inner, degenerate, image), image, factor)


# --- geometric ops: PIL's AFFINE convention (output pixel -> input coordinates) ---------------------------
def affine(image, a, b, c, d, e, f):
    """PIL `img.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR, fillcolor=FILL)`: the output pixel centred
    at (x, y) samples the input at (a x + b y + c, d x + e y + f). As PIL: a sample whose centre falls outside
    the image takes the fill colour; inside, bilinear with edge pixels repeated; the result is rounded."""
    # PIL works on pixel centres (x + 0.5); TensorFlow's warp on indices: shift the offsets accordingly.
    c2 = c + 0.5 * (a + b - 1.0)
    f2 = f + 0.5 * (d + e - 1.0)
    transform = tf.cast(tf.stack([a, b, c2, d, e, f2, 0.0, 0.0])[None], tf.float32)
    shape = tf.shape(image)[:2]
    warped = tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=transform, output_shape=shape,
                                                   fill_value=0.0, interpolation="BILINEAR",
                                                   fill_mode="NEAREST")[0]
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    xi, yi = a * xs + b * ys + c2, d * xs + e * ys + f2
    inside = (xi >= -0.5) & (xi < w - 0.5) & (yi >= -0.5) & (yi < h - 0.5)
    return tf.where(inside[..., None], tf.clip_by_value(tf.floor(warped), 0.0, 255.0), tf.constant(FILL))


def rotate(image, degrees):
    """PIL `img.rotate(degrees)` (counter-clockwise, about the centre (w/2, h/2), same size)."""
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    angle = -degrees * math.pi / 180.0
    a, b, d, e = tf.cos(angle), tf.sin(angle), -tf.sin(angle), tf.cos(angle)
    cx, cy = w / 2.0, h / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return affine(image, a, b, c, d, e, f)


def _op(name, image, level, sign, width, height):
    """One op at magnitude `level` in [0, 10]; `sign` (+-1) negates the signed arguments as timm does."""
    frac = level / MAX_LEVEL
    enhance = lambda: 1.0 + sign * frac * 0.9
    table = {
        "AutoContrast": lambda: auto_contrast(image),
        "Equalize": lambda: equalize(image),
        "Invert": lambda: 255.0 - image,
        "Rotate": lambda: rotate(image, sign * frac * 30.0),
        "PosterizeIncreasing": lambda: posterize(image, 4 - tf.cast(tf.floor(frac * 4), tf.int32)),
        "Posterize": lambda: posterize(image, tf.cast(tf.floor(frac * 4), tf.int32)),
        "SolarizeIncreasing": lambda: solarize(image, 256.0 - tf.floor(frac * 256)),
        "Solarize": lambda: solarize(image, tf.floor(frac * 256)),
        "SolarizeAdd": lambda: solarize_add(image, tf.floor(frac * 110)),
        "ColorIncreasing": lambda: color(image, enhance()),
        "ContrastIncreasing": lambda: contrast(image, enhance()),
        "BrightnessIncreasing": lambda: brightness(image, enhance()),
        "SharpnessIncreasing": lambda: sharpness(image, enhance()),
        "Color": lambda: color(image, frac * 1.8 + 0.1),
        "Contrast": lambda: contrast(image, frac * 1.8 + 0.1),
        "Brightness": lambda: brightness(image, frac * 1.8 + 0.1),
        "Sharpness": lambda: sharpness(image, frac * 1.8 + 0.1),
        "ShearX": lambda: affine(image, 1.0, sign * frac * 0.3, 0.0, 0.0, 1.0, 0.0),
        "ShearY": lambda: affine(image, 1.0, 0.0, 0.0, sign * frac * 0.3, 1.0, 0.0),
        "TranslateXRel": lambda: affine(image, 1.0, 0.0, sign * frac * TRANSLATE_PCT * width, 0.0, 1.0, 0.0),
        "TranslateYRel": lambda: affine(image, 1.0, 0.0, 0.0, 0.0, 1.0, sign * frac * TRANSLATE_PCT * height),
    }
    return table[name]()


def apply_op(name: str, image255, level, sign):
    """`name` on a float image holding 0..255 values (3 channels), magnitude `level`, sign +-1."""
    h, w = tf.cast(tf.shape(image255)[0], tf.float32), tf.cast(tf.shape(image255)[1], tf.float32)
    return _op(name, image255, tf.cast(level, tf.float32), tf.cast(sign, tf.float32), w, h)


def rand_augment(image, seed, policy: dict):
    """One training image in [0,1] (H, W, 3) -> RandAugment'ed image in [0,1], deterministic in `seed`."""
    if image.shape[-1] is not None and image.shape[-1] != 3:
        raise ValueError(f"RandAugment needs RGB images (3 channels), got {image.shape[-1]}: unset data.randaugment")
    image = tf.ensure_shape(image, [None, None, 3])  # the ops unstack channels: make the 3 static
    ops = INCREASING_OPS if policy["increasing"] else ORIGINAL_OPS
    x = tf.round(image * 255.0)
    seeds = tf.random.experimental.stateless_split(seed, policy["num_ops"])
    for i in range(policy["num_ops"]):
        s_op, s_apply, s_mag, s_sign = tf.unstack(tf.random.experimental.stateless_split(seeds[i], 4))
        index = tf.random.stateless_uniform([], s_op, 0, len(ops), dtype=tf.int32)
        level = policy["magnitude"]
        if policy["magnitude_std"] == float("inf"):
            level = tf.random.stateless_uniform([], s_mag, 0.0, level)
        elif policy["magnitude_std"] > 0:
            level = level + policy["magnitude_std"] * tf.random.stateless_normal([], s_mag)
        level = tf.clip_by_value(tf.cast(level, tf.float32), 0.0, policy["magnitude_max"])
        sign = tf.where(tf.random.stateless_uniform([], s_sign) > 0.5, -1.0, 1.0)
        branches = [(lambda name=name: apply_op(name, x, level, sign)) for name in ops]
        applied = tf.switch_case(index, branches)
        x = tf.where(tf.random.stateless_uniform([], s_apply) < 0.5, applied, x)
        x = tf.ensure_shape(x, image.shape)
    return x / 255.0
