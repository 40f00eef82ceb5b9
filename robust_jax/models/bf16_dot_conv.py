"""bfloat16 'same' stride-1 convolutions as one matrix product, for CPUs with AMX.

jaxlib 0.10.2 has no bfloat16 convolution kernel on CPU: XLA converts a bfloat16 convolution's operands to
float32, convolves in float32 and converts back, so `model.dtype='bfloat16'` ran no faster than float32. Its
bfloat16 matrix products are fast, though: on the AMX CPU we measured (2 cores of an Intel Xeon with amx_bf16)
a bfloat16 product with float32 accumulation runs at 1.5-2 TFLOP/s against ~400 GFLOP/s in float32.
`conv_same` writes the convolution as such a product without a full im2col: the kh vertical taps of the
padded input are stacked along the channels ([N, H, W + kw - 1, kh*C]), one product with the kernel
arranged as [kh*C, kw*O] gives every horizontal tap's partial sums at once, and the kw column-shifted slices
of those are added. The stacking copies only kh shifted row blocks (a full kh*kw im2col copies every pixel
kh*kw times and cost more than the product saved), and it copies them as uint32 pairs of channels: XLA:CPU
moves bfloat16 arrays element by element, ~4x slower. Products in bfloat16, sums in float32, the result
rounded to bfloat16: XLA's converted convolution up to the order of the float32 sums.

`fast_on_this_cpu()` says whether the CPU has AMX-BF16 (Linux /proc/cpuinfo): `models.layers` routes
bfloat16 convolutions here only then; elsewhere (e.g. AVX-512-BF16 without AMX) this was not measured
faster. benchmarks/README.md, "bfloat16", has the numbers.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax


@functools.lru_cache(maxsize=None)
def fast_on_this_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports AMX-BF16 (read once from `cpuinfo`; False where it cannot be read)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _as_words(x):
    """bfloat16 [..., C] (C even) -> uint32 [..., C/2], two channels per word."""
    return lax.bitcast_convert_type(x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2)), jnp.uint32)


def _as_bf16(words):
    """uint32 [..., C/2] -> bfloat16 [..., C], the inverse of `_as_words`."""
    x = lax.bitcast_convert_type(words, jnp.bfloat16)
    return x.reshape(x.shape[:-2] + (-1,))


MAX_PIXELS = 256
"""Maps of at most this many pixels (16x16) take the product: on 32x32x64 it ran at 12 ms against float32's 6.6."""


def applies(lhs_shape, rhs_shape, lhs_dtype, rhs_dtype) -> bool:
    """Whether `conv_same` takes these operands: both bfloat16, an odd kernel, even channel counts (pairs of
    channels move as one uint32), a map of at most MAX_PIXELS."""
    kh, kw, c, o = rhs_shape
    return (lhs_dtype == jnp.bfloat16 and rhs_dtype == jnp.bfloat16 and kh % 2 == 1 and kw % 2 == 1
            and c % 2 == 0 and o % 2 == 0 and lhs_shape[-1] == c and lhs_shape[1] * lhs_shape[2] <= MAX_PIXELS)


def conv_same(x, w):
    """The 'same' stride-1 convolution of NHWC `x` with the HWIO kernel `w` (odd kh, kw; padding k // 2 on
    each side), both bfloat16 with even channel counts: one bfloat16 product, float32 sums, bfloat16 out."""
    kh, kw, c, o = w.shape
    n, h, width, _ = x.shape
    words = jnp.pad(_as_words(x), ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    rows = _as_bf16(jnp.concatenate([words[:, i:i + h] for i in range(kh)], axis=-1))  # [N, H, W+kw-1, kh*C]
    kernel = jnp.transpose(w, (0, 2, 1, 3)).reshape(kh * c, kw * o)  # rows (tap row, C), columns (tap column, O)
    partial = lax.dot_general(rows, kernel, (((3,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    out = functools.reduce(jnp.add, [partial[:, :, j:j + width, j * o:(j + 1) * o] for j in range(kw)])
    return out.astype(x.dtype)


def input_gradient_kernel(w):
    """The HWIO kernel whose 'same' convolution of an output cotangent is the input's: spatially reversed,
    input and output features swapped."""
    return jnp.swapaxes(w[::-1, ::-1], 2, 3)
