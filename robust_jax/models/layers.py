"""Building blocks shared by every model: torch-compatible conv/dense and BatchNorm.

BatchNorm is our own (not `flax.linen.BatchNorm`) for three reasons the methods need:
  * the running variance is updated with the *unbiased* batch variance, as PyTorch does, so converted
    checkpoints and ported recipes keep the same running statistics;
  * `group_size` gives "ghost" statistics per group of examples, reproducing the per-GPU statistics of
    PyTorch DataParallel/DDP references on any hardware;
  * `DualBatchNorm` holds a clean and an adversarial set (AdvProp/AdvBN), picked by `bn='clean'|'adv'`.
"""
from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default init for Conv2d/Linear weights: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Kaiming normal (fan_out), used by torchvision ResNets and the WideResNets of the references.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MODES = ("clean", "adv")


def conv(features: int, kernel: int, stride: int = 1, *, padding: Optional[int] = None, name=None,
         kernel_init=torch_default_init, use_bias: bool = False, dtype=jnp.float32):
    """A Conv with PyTorch's symmetric padding (k // 2 by default), which differs from 'SAME' at stride 2."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, kernel_init=kernel_init, name=name, dtype=dtype)


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
                n = xf[0].size // c
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
