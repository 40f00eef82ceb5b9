"""JPEG compression as a pure JAX function: libjpeg(-turbo)'s lossy pipeline, as Pillow runs it.

The reference corruption saves the image with `PIL.Image.save(..., 'JPEG', quality=q)` and decodes it
again. Only the lossy stages matter (Huffman coding is lossless), and Pillow runs them with libjpeg's
defaults, which this module reproduces in integer arithmetic:

encode  RGB -> YCbCr (jccolor.c, 16-bit fixed point; Cb/Cr rounded with 0.5-epsilon), 4:2:0 chroma
        subsampling (jcsample.c `h2v2_downsample`: 2x2 sums with the alternating 1, 2 rounding bias),
        libjpeg's edge padding to whole blocks, 8x8 integer "slow" forward DCT (jfdctint.c), quantisation
        by rounding division with the standard Annex K tables scaled by quality
        (jcparam.c: scale 5000/q below 50 else 200 - 2q, `(base * scale + 50) / 100` clamped to 1..255,
        baseline);
decode  dequantisation, integer slow inverse DCT (jidctint.c) with range limiting, "fancy" triangle
        upsampling of the chroma (jdsample.c `h2v2_fancy_upsample`, its 8/7 rounding biases, replicated
        edges), YCbCr -> RGB (jdcolor.c tables).

Input is quantised to uint8 first (`round(255 x)`), as the reference only accepts uint8 images.
Everything is elementwise or per 8x8 block, so it is fully vectorised over a batch. Each DCT pass is
integer-linear up to its final rounding shift, so it runs as an exact int32 8x8 matrix multiply-and-sum
(the matrix is derived on the host from the transcribed libjpeg butterflies) followed by libjpeg's
DESCALE; this keeps the compiled graph small (~2 s to compile instead of ~12 s for the unrolled
butterflies). The batch runs as a chain of separately compiled stages (`stages.separately`): colour
conversion, each DCT pass, chroma upsampling, so that XLA:CPU neither recomputes a stage once per tap of
the next nor fuses the interleaving upsample into the colour conversion. Measured: output identical to
Pillow 13 / libjpeg-turbo on every tested image, size and quality.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import stages
from robust_jax.corruptions import params as params_lib

QUALITY = (25, 18, 15, 10, 7)
"""PIL quality per severity 1..5 (the reference's table)."""

_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32).reshape(8, 8)
"""The example quantisation tables of the JPEG standard (ITU T.81 Annex K), natural (row-major) order."""


def quant_tables(quality: int):
    """libjpeg's `jpeg_set_quality(quality, force_baseline=TRUE)`: (luma, chroma) int tables."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255).astype(np.int32) for base in (_LUMA, _CHROMA))


def _fix(x: float) -> int:
    return int(x * (1 << 16) + 0.5)


_RGB_TO_YCC = np.array([[_fix(0.299), _fix(0.587), _fix(0.114)],
                        [-_fix(0.16874), -_fix(0.33126), _fix(0.5)],
                        [_fix(0.5), -_fix(0.41869), -_fix(0.08131)]], np.int32)
_YCC_OFFSET = np.array([1 << 15, (128 << 16) + (1 << 15) - 1, (128 << 16) + (1 << 15) - 1], np.int32)
_YCC_TO_RGB = np.array([[0, _fix(1.402)], [-_fix(0.34414), -_fix(0.71414)], [_fix(1.772), 0]], np.int32)
"""jccolor.c's 16-bit fixed-point RGB -> YCbCr rows (Y, Cb, Cr; Cb/Cr rounded with 0.5-epsilon) and
jdcolor.c's (Cb - 128, Cr - 128) -> (R, G, B) offsets added to Y."""


def rgb_to_ycc(rgb):
    """jccolor.c `rgb_ycc_convert` on int32 RGB `[..., 3]` in 0..255 -> int32 YCbCr `[..., 3]` in 0..255.

    Channels stay last: a product broadcast over the channel axis keeps XLA:CPU's loop vectorised, where
    stacking three planes reads the interleaved input element by element (measured 1.5-2x slower)."""
    r, g, b = rgb[..., 0:1], rgb[..., 1:2], rgb[..., 2:3]
    m = _RGB_TO_YCC
    return (r * m[:, 0] + g * m[:, 1] + b * m[:, 2] + _YCC_OFFSET) >> 16


def ycc_to_rgb(y, cb, cr):
    """jdcolor.c `ycc_rgb_convert` (table arithmetic, results range-limited to 0..255) of int32 planes
    -> int32 RGB `[..., 3]`. Computed as planes and moved to the last axis once (measured ~3x faster
    than stacking along the last axis)."""
    cb, cr = cb - 128, cr - 128
    half = 1 << 15
    planes = [y + ((int(a) * cb + int(b) * cr + half) >> 16) for a, b in _YCC_TO_RGB]
    return jnp.moveaxis(jnp.clip(jnp.stack(planes), 0, 255), 0, -1)


def downsample_h2v2(c):
    """jcsample.c `h2v2_downsample` on an even-sized int32 plane: (2x2 sum + bias) >> 2, bias 1, 2, 1, ...
    along each output row."""
    s = c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]
    bias = 1 + (jnp.arange(s.shape[1]) % 2)
    return (s + bias[None, :]) >> 2


def upsample_h2v2_fancy(c):
    """jdsample.c `h2v2_fancy_upsample`: triangle filter (3/4 near, 1/4 far) vertically then horizontally
    with rounding biases 8 and 7, edges replicated; [h, w] -> [2h, 2w]."""
    up = jnp.concatenate([c[:1], c[:-1]], axis=0)
    down = jnp.concatenate([c[1:], c[-1:]], axis=0)
    rows = jnp.stack([3 * c + up, 3 * c + down], axis=1).reshape(2 * c.shape[0], c.shape[1])
    left = jnp.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    right = jnp.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out_left = (3 * rows + left + 8) >> 4
    out_right = (3 * rows + right + 7) >> 4
    return jnp.stack([out_left, out_right], axis=2).reshape(rows.shape[0], 2 * rows.shape[1])


# ------------------------------------------------------------------------------------ integer DCT
_CONST_BITS, _PASS1_BITS = 13, 2
_F = {name: round(value * (1 << _CONST_BITS)) for name, value in {
    "f0298": 0.298631336, "f0390": 0.390180644, "f0541": 0.541196100, "f0765": 0.765366865,
    "f0899": 0.899976223, "f1175": 1.175875602, "f1501": 1.501321110, "f1847": 1.847759065,
    "f1961": 1.961570560, "f2053": 2.053119869, "f2562": 2.562915447, "f3072": 3.072711026}.items()}


def _odd_part(t4, t5, t6, t7):
    """The shared rotation network of jfdctint/jidctint's odd part."""
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * _F["f1175"]
    t4, t5, t6, t7 = t4 * _F["f0298"], t5 * _F["f2053"], t6 * _F["f3072"], t7 * _F["f1501"]
    z1, z2 = z1 * -_F["f0899"], z2 * -_F["f2562"]
    z3, z4 = z3 * -_F["f1961"] + z5, z4 * -_F["f0390"] + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_sums(d, first_pass: bool):
    """One pass of jfdctint.c's `jpeg_fdct_islow` on the 8 inputs `d`, before its final descaling:
    (the 8 integer sums, the right shift DESCALE applies to each; 0 = none)."""
    t0, t7 = d[0] + d[7], d[0] - d[7]
    t1, t6 = d[1] + d[6], d[1] - d[6]
    t2, t5 = d[2] + d[5], d[2] - d[5]
    t3, t4 = d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    shift = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS
    if first_pass:
        o0, o4, even_shift = (t10 + t11) * (1 << _PASS1_BITS), (t10 - t11) * (1 << _PASS1_BITS), 0
    else:
        o0, o4, even_shift = t10 + t11, t10 - t11, _PASS1_BITS
    z1 = (t12 + t13) * _F["f0541"]
    o2 = z1 + t13 * _F["f0765"]
    o6 = z1 - t12 * _F["f1847"]
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    return [o0, o1, o2, o3, o4, o5, o6, o7], [even_shift, shift, shift, shift, even_shift, shift, shift, shift]


def _idct_sums(d, first_pass: bool):
    """One pass of jidctint.c's `jpeg_idct_islow` on the 8 inputs `d`, before its final descaling."""
    z1 = (d[2] + d[6]) * _F["f0541"]
    t2 = z1 - d[6] * _F["f1847"]
    t3 = z1 + d[2] * _F["f0765"]
    t0 = (d[0] + d[4]) * (1 << _CONST_BITS)
    t1 = (d[0] - d[4]) * (1 << _CONST_BITS)
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    shift = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS + 3
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3], [shift] * 8


def _pass_matrix(sums_fn, first_pass: bool):
    """Each pass is integer-linear up to its final DESCALE, so it is an 8x8 integer matrix (found by
    feeding unit vectors) followed by per-output rounding shifts; this keeps the XLA graph small."""
    columns, shifts = sums_fn(list(np.eye(8, dtype=np.int64)), first_pass)
    return np.stack(columns).astype(np.int32), np.asarray(shifts, np.int32)


_PASSES = {(fn.__name__, first): _pass_matrix(fn, first) for fn in (_fdct_sums, _idct_sums) for first in (True, False)}


def _apply_pass(x, name: str, first_pass: bool, axis: int = -1):
    """Applies one DCT pass along `axis` (-1 or -3) of int32 `x`: exact integer products, then
    DESCALE(v, n) = (v + 2**(n-1)) >> n per output (no rounding where n = 0)."""
    matrix, shifts = _PASSES[(name, first_pass)]
    half = np.where(shifts > 0, 1 << np.maximum(shifts - 1, 0), 0).astype(np.int32)
    # a broadcast multiply-and-sum rather than an integer dot: exact, and supported by every backend
    if axis == -1:
        sums = jnp.sum(x[..., None, :] * jnp.asarray(matrix), axis=-1)
        return (sums + jnp.asarray(half)) >> jnp.asarray(shifts)
    assert axis == -3, axis
    sums = jnp.sum(x[..., None, :, :, :] * jnp.asarray(matrix)[:, :, None, None], axis=-3)
    return (sums + jnp.asarray(half)[:, None, None]) >> jnp.asarray(shifts)[:, None, None]


def _to_blocks(planes):
    """The level-shifted block view `[N, H'/8, 8 (row in block), W/8, 8 (column in block)]` of int32 planes
    `[N, H, W]` (W a multiple of 8), the last row replicated down to whole blocks (jcprepct.c). DCT passes
    run along axis -1 (rows) or -3 (columns) of this free reshape, so no block transposes are
    materialised (they cost more than the DCT itself on XLA:CPU)."""
    n, h, w = planes.shape
    planes = jnp.pad(planes, ((0, 0), (0, -h % 8), (0, 0)), mode="edge")
    return (planes - 128).reshape(n, planes.shape[1] // 8, 8, w // 8, 8)


def _quantise(coef, table):
    """Quantisation and dequantisation of DCT blocks: `sign(c) * ((|c| + 4q) // 8q) * q` (the DCT output
    carries a factor 8). The division is done in float32 as floor((a + 1/2) / b): a and b are integers
    below 2**15, so the float quotient is > 1/(2b) away from any integer and the floor is exact even with
    a reciprocal-multiply division."""
    q = jnp.asarray(table, jnp.int32)[:, None, :]
    num = (jnp.abs(coef) + 4 * q).astype(jnp.float32) + 0.5
    level = jnp.sign(coef) * jnp.floor(num / (8 * q).astype(jnp.float32)).astype(jnp.int32)
    return level * q


def _compress(planes_fn, arg, table):
    """Encode + decode the component planes `planes_fn(arg)` (int32 `[N, H, W]`, W a multiple of 8):
    forward DCT (rows, then columns with quantisation), inverse DCT (columns, then rows), level shift
    back, clamp to 0..255. Returns `[N, H', W]` (H rounded up to whole blocks).

    Four separate stages: each DCT pass reads 8 values of its input per output, so a fused producer
    would be recomputed 8 times; the quantisation follows the column pass elementwise."""
    rows = stages.separately(lambda a: _apply_pass(_to_blocks(planes_fn(a)), "_fdct_sums", True, -1), arg)
    deq = stages.separately(lambda c: _quantise(_apply_pass(c, "_fdct_sums", False, -3), table), rows)
    cols = stages.separately(lambda d: _apply_pass(d, "_idct_sums", True, -3), deq)
    pixels = stages.separately(lambda p: jnp.clip(_apply_pass(p, "_idct_sums", False, -1) + 128, 0, 255), cols)
    n, hb, _, wb, _ = pixels.shape
    return pixels.reshape(n, hb * 8, wb * 8)


def _encode(images, h: int, w: int):
    """Interleaved uint8 YCbCr `[B, H', W', 3]` of images `[B, H, W, 3]` in [0, 1], with libjpeg's
    full-resolution edge replication to an even height and to whole chroma blocks in width (jcprepct.c,
    jcsample.c; each component later replicates its own last row down to whole blocks, so chroma padding
    rows repeat the last subsampled row, not averages of copies). uint8, not int32: the two stages that
    read it move a quarter of the bytes (measured ~6% faster overall)."""
    rgb = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.int32)
    return rgb_to_ycc(jnp.pad(rgb, ((0, 0), (0, h % 2), (0, -w % 16), (0, 0)), mode="edge")).astype(jnp.uint8)


def _subsampled_chroma(ycc):
    """The int32 4:2:0 chroma planes `[2B, H'/2, W'/2]` (all Cb, then all Cr) of YCbCr `[B, H', W', 3]`."""
    chroma = jnp.moveaxis(ycc[..., 1:].astype(jnp.int32), -1, 0)
    return jax.vmap(downsample_h2v2)(chroma.reshape(-1, *chroma.shape[2:]))


def jpeg_roundtrip_batch(images, quality: int):
    """A batch `[B, H, W, 3]` in [0, 1] after a libjpeg round trip at `quality` (4:2:0), as floats."""
    b, h, w = images.shape[:3]
    luma_table, chroma_table = quant_tables(quality)
    ycc = stages.separately(lambda im: _encode(im, h, w), images)
    y = _compress(lambda v: v[..., 0].astype(jnp.int32), ycc, luma_table)[:, :h, :w]
    chroma = _compress(_subsampled_chroma, ycc, chroma_table)[:, :(h + 1) // 2, :(w + 1) // 2]
    chroma = stages.separately(jax.vmap(upsample_h2v2_fancy), chroma)[:, :h, :w]
    return ycc_to_rgb(y, chroma[:b], chroma[b:]).astype(jnp.float32) / 255.0


def jpeg_roundtrip(image, quality: int):
    """`jpeg_roundtrip_batch` of one RGB image `[H, W, 3]`."""
    return jpeg_roundtrip_batch(image[None], quality)[0]


def jpeg_compression(key, image, severity: int, params: str = "imagenet"):
    """ImageNet-C `jpeg_compression`: a JPEG round trip at quality 25, 18, 15, 10, 7 (deterministic);
    CIFAR-10-C's qualities are 80, 65, 58, 50, 40."""
    del key
    return jpeg_roundtrip(image, params_lib.pick(params, QUALITY, "jpeg_compression")[severity - 1])


def jpeg_compression_batch(key, images, severity: int, params: str = "imagenet"):
    """`jpeg_compression` of a batch `[B, H, W, 3]` (what `corrupt` calls; same values)."""
    del key
    return jpeg_roundtrip_batch(images, params_lib.pick(params, QUALITY, "jpeg_compression")[severity - 1])
