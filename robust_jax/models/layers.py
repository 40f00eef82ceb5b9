"""Building blocks shared by every model: torch-compatible conv/dense and BatchNorm.

Every conv runs through `conv_general_dilated` below: `lax.conv_general_dilated` with the same values
and derivatives, on the CPU differentiated so that the input gradient keeps the forward's kernel layout.
Without it XLA:CPU runs the input-gradient convolutions of an attack loop (`fori_loop` body) on its slow
generic path, 2-3x slower than the same steps unrolled (benchmarks/README.md has the evidence).

BatchNorm is our own (not `flax.linen.BatchNorm`) for three reasons the methods need:
  * the running variance is updated with the *unbiased* batch variance, as PyTorch does, so converted
    checkpoints and ported recipes keep the same running statistics;
  * `group_size` gives "ghost" statistics per group of examples, reproducing the per-GPU statistics of
    PyTorch DataParallel/DDP references on any hardware;
  * `DualBatchNorm` holds a clean and an adversarial set (AdvProp/AdvBN), picked by `bn='clean'|'adv'`.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from robust_jax import stages
from robust_jax.models import bf16_dot_conv

# PyTorch's default init for Conv2d/Linear weights: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Kaiming normal (fan_out), used by torchvision ResNets and the WideResNets of the references.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MODES = ("clean", "adv")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` (same signature, values and derivatives of every order; on maps of <= 4x4
    pixels values to float32 rounding, see below) whose input gradient is a convolution with the kernel in
    the forward's layout (HWIO for our NHWC models).

    Why: JAX transposes `conv(x, w)` w.r.t. `x` into `conv(g, reverse(w))` with the kernel's in/out
    features swapped (HLO `dim_labels=b01f_01oi->b01f`). XLA:CPU's ConvCanonicalization pass rewrites
    such convolutions to the canonical `01io` layout (one kernel transpose), which its fast convolution
    path needs, but it only visits the entry computation: inside a `while` body (`fori_loop`, `scan`),
    as in every PGD attack, those convolutions stay `01oi` and run on the slow generic emitter.
    Here the JVP hands the same linear map to JAX with the kernel swapped to HWOI, so its transpose (the
    input gradient) is `conv(g, reverse(swap(w)))` with an HWIO kernel: canonical wherever it is.
    The weight gradient reads the input with its batch and feature axes swapped, computed as a stage of
    its own (`stages.separately`) rather than fused with the input's producers (see `_conv_jvp`). The
    forward of a 'same' stride-1 convolution on a map of <= 4x4 pixels is an im2col product (`_im2col_conv`:
    lax's values to float32 rounding; its derivatives are the convolutions above). On CPUs with AMX, a
    bfloat16 'same' stride-1 convolution on a map of <= 16x16 pixels and its input gradient are one bfloat16
    product each (`bf16_dot_conv`; jaxlib has no bfloat16 convolution on CPU): lax's values to bfloat16
    rounding, reverse-mode derivatives only (`_bf16_dot_conv`).
    Grouped convolutions, string paddings and every other backend than the CPU (the pass and the layout
    problem are XLA:CPU's) go to `lax.conv_general_dilated` unchanged.
    """
    plain = jax.default_backend() != "cpu" or feature_group_count != 1 or batch_group_count != 1
    if plain or isinstance(padding, str):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    static = (tuple(window_strides), tuple(tuple(p) for p in padding),
              None if lhs_dilation is None else tuple(lhs_dilation),
              None if rhs_dilation is None else tuple(rhs_dilation), dn, precision, preferred_element_type)
    if _bf16_dot_applies(static, lhs, rhs):
        return _bf16_dot_conv(static, lhs, rhs)
    return _conv(static, lhs, rhs)


def _lax_conv(static, lhs, rhs, dn=None):
    strides, padding, lhs_dilation, rhs_dilation, dn0, precision, preferred = static
    return lax.conv_general_dilated(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn or dn0,
                                    precision=precision, preferred_element_type=preferred)


SMALL_MAP_PIXELS = 16
"""Output maps of at most this many pixels (4x4) run their 'same' stride-1 forward as an im2col product."""


def _same_stride1_nhwc(static, rhs_shape) -> bool:
    """An NHWC/HWIO 2-D convolution with stride 1, no dilation, an odd kernel and padding k // 2 each side."""
    strides, padding, lhs_dilation, rhs_dilation, dn, _, preferred = static
    kh, kw = rhs_shape[0], rhs_shape[1]
    return (tuple(dn.lhs_spec) == (0, 3, 1, 2) and tuple(dn.rhs_spec) == (3, 2, 0, 1)
            and tuple(dn.out_spec) == (0, 3, 1, 2) and preferred is None and set(strides) == {1}
            and lhs_dilation in (None, (1, 1)) and rhs_dilation in (None, (1, 1)) and kh % 2 == 1 and kw % 2 == 1
            and padding == ((kh // 2, kh // 2), (kw // 2, kw // 2)))


def _im2col_applies(static, lhs_shape, rhs_shape) -> bool:
    return _same_stride1_nhwc(static, rhs_shape) and lhs_shape[1] * lhs_shape[2] <= SMALL_MAP_PIXELS


def _bf16_dot_applies(static, lhs, rhs) -> bool:
    return (bf16_dot_conv.fast_on_this_cpu() and _same_stride1_nhwc(static, rhs.shape)
            and bf16_dot_conv.applies(lhs.shape, rhs.shape, lhs.dtype, rhs.dtype))


def _im2col_conv(static, lhs, rhs):
    """The 'same' stride-1 NHWC/HWIO convolution as one product of the [N, H, W, kh*kw*C] patches with the
    flattened kernel. On maps of <= 4x4 pixels (ResNet-18's last stage on CIFAR) XLA:CPU's Eigen
    convolution shrinks little with the batch (AutoAttack's Square runs its forward at the handful of points
    still robust: 5.6 ms at batch 13, PyTorch 2.7); the product runs ResNet-18's batch-13 forward at 42 ms
    instead of 53 (PyTorch 39): benchmarks/README.md, "im2col"."""
    kh, kw, c, o = rhs.shape
    h, w = lhs.shape[1:3]
    padded = jnp.pad(lhs, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], axis=-1)
    return lax.dot_general(patches, rhs.reshape(kh * kw * c, o), (((3,), (0,)), ((), ())), precision=static[5])


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _conv(static, lhs, rhs):
    if _im2col_applies(static, lhs.shape, rhs.shape):
        return _im2col_conv(static, lhs, rhs)
    return _lax_conv(static, lhs, rhs)


def _conv_jvp(static, primals, tangents):
    lhs, rhs = primals
    d_lhs, d_rhs = tangents
    out = _conv(static, lhs, rhs)
    parts = []
    if not isinstance(d_rhs, SymbolicZero):
        # The same linear map of d_rhs, on the input with its batch and feature axes swapped as a stage
        # of its own (relabelled in the dimension numbers): the weight gradient, its transpose, needs
        # that layout. Left to XLA:CPU, the swap fuses with the input's producers (BatchNorm, ReLU,
        # residual add), which it then reads in transposed order: 75 ms of a 780 ms PreAct-ResNet-18
        # train step, against ~30 ms for plain transposes of the stored input.
        dn = static[4]
        b, f = dn.lhs_spec[0], dn.lhs_spec[1]
        swapped = stages.separately(lambda x: jnp.swapaxes(x, b, f), lhs)
        relabelled = lax.ConvDimensionNumbers((f, b) + tuple(dn.lhs_spec[2:]), dn.rhs_spec, dn.out_spec)
        parts.append(_lax_conv(static, swapped, d_rhs, relabelled))
    if not isinstance(d_lhs, SymbolicZero):
        # The same linear map of d_lhs, with the kernel's out/in feature axes swapped in the array and
        # in the dimension numbers; transposing it swaps them back: the input gradient sees the forward's
        # kernel layout.
        dn = static[4]
        o, i, spatial = dn.rhs_spec[0], dn.rhs_spec[1], tuple(dn.rhs_spec[2:])
        swapped = lax.ConvDimensionNumbers(dn.lhs_spec, (i, o) + spatial, dn.out_spec)
        k = lax.optimization_barrier(lax.rev(jnp.swapaxes(rhs, o, i), spatial))
        parts.append(_lax_conv(static, d_lhs, lax.rev(k, spatial), swapped))
    tangent = functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(out)
    return out, tangent


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_dot_conv(static, lhs, rhs):
    """A bfloat16 'same' stride-1 convolution as one product on AMX CPUs (`bf16_dot_conv.conv_same`): the
    forward and the input gradient (the same product with the reversed, swapped kernel), which are all of an
    attack step's convolutions; the weight gradient is `_conv`'s (a float32 convolution, as before). Reverse
    mode only (grad/vjp, any order); forward mode (jax.jvp) raises."""
    return bf16_dot_conv.conv_same(lhs, rhs)


def _bf16_dot_conv_fwd(static, lhs, rhs):
    return bf16_dot_conv.conv_same(lhs, rhs), (lhs, rhs)


def _bf16_dot_conv_bwd(static, residuals, g):
    lhs, rhs = residuals
    d_lhs = bf16_dot_conv.conv_same(g, bf16_dot_conv.input_gradient_kernel(rhs))
    _, weight_vjp = jax.vjp(lambda r: _conv(static, lhs, r), rhs)
    return d_lhs, weight_vjp(g)[0]


_bf16_dot_conv.defvjp(_bf16_dot_conv_fwd, _bf16_dot_conv_bwd)


def conv(features: int, kernel: int, stride: int = 1, *, padding: Optional[int] = None, name=None,
         kernel_init=torch_default_init, use_bias: bool = False, dtype=jnp.float32):
    """A Conv with PyTorch's symmetric padding (k // 2 by default), which differs from 'SAME' at stride 2.
    Runs `conv_general_dilated` above (fast input gradients inside attack loops on XLA:CPU)."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, kernel_init=kernel_init, name=name, dtype=dtype,
                   conv_general_dilated=conv_general_dilated)


def dense(features: int, *, name=None, kernel_init=torch_default_init, dtype=jnp.float32):
    return nn.Dense(features, kernel_init=kernel_init, name=name, dtype=dtype)


def _group(x, group_size: Optional[int]):
    """[B, ...] -> [G, B/G, ...] ghost groups (G=1 without grouping)."""
    b = x.shape[0]
    g = group_size or b
    if b % g:
        raise ValueError(f"BatchNorm group_size={g} does not divide the batch of {b}")
    return x.reshape((b // g, g) + x.shape[1:])


class BatchNorm(nn.Module):
    """BatchNorm over all axes but the last, with PyTorch semantics (momentum 0.1, eps 1e-5).

    train=True normalises with batch statistics (per ghost group of `group_size` examples when set;
    `None` = the whole global batch, i.e. synchronised BN under `jit`) and updates the running
    statistics with the mean over groups of each group's mean and unbiased variance.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    group_size: Optional[int] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str = "clean"):
        if bn != "clean":
            raise ValueError(f"bn={bn!r} needs a model built with dual_bn=True")
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train:
            xf = _group(x.astype(jnp.float32), self.group_size)
            axes = tuple(range(1, xf.ndim - 1))
            mean = jnp.mean(xf, axes, keepdims=True)
            var = jnp.mean(jnp.square(xf - mean), axes, keepdims=True)
            y = ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                n = math.prod(xf.shape[1:-1])  # examples x positions per group (static, any mesh)
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                over_groups = tuple(range(mean.ndim - 1))
                ra_mean.value = (1 - m) * ra_mean.value + m * jnp.mean(mean, over_groups)
                ra_var.value = (1 - m) * ra_var.value + m * jnp.mean(unbiased, over_groups)
        else:
            y = (x.astype(jnp.float32) - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
        return (y * scale + bias).astype(self.dtype)


class DualBatchNorm(BatchNorm):
    """Two BatchNorms, `clean` and `adv`, sharing nothing; `bn` picks one (AdvProp / AdvBN heads)."""

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str = "clean"):
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        make = functools.partial(BatchNorm, self.momentum, self.epsilon, self.group_size, self.dtype)
        clean, adv = make(name="clean"), make(name="adv")
        if self.is_initializing():  # create both sets of variables whichever branch runs first
            y_adv = adv(x, train=train)
            y_clean = clean(x, train=train)
            return y_adv if bn == "adv" else y_clean
        return (adv if bn == "adv" else clean)(x, train=train)


def batch_norm(*, dual: bool = False, group_size: Optional[int] = None, dtype=jnp.float32, name=None):
    """The BatchNorm a model asks for: dual or single, ghost-grouped or synchronised."""
    cls = DualBatchNorm if dual else BatchNorm
    return cls(group_size=group_size, dtype=dtype, name=name)
