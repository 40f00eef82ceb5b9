"""Vision Transformer (ViT / DeiT) with the semantics of timm 0.5.4's `VisionTransformer`.

    model = models.get('vit_b16', num_classes=1000, mean=(0.5,) * 3, std=(0.5,) * 3, drop_path_rate=0.25)
    logits = model.apply(variables, x, train=True, rngs={'dropout': key})   # x: [B, 224, 224, 3] in [0,1]

Structure (pre-norm transformer): normalise -> patch conv (kernel = stride = patch_size) -> prepend the
class token -> add the learned position embedding (fixed to `image_size`) -> dropout -> `depth` blocks
`x + drop_path(attn(norm1(x)))`, `x + drop_path(mlp(norm2(x)))` -> final LayerNorm -> class token (or
the mean of the patch tokens with pool='gap') -> linear head. LayerNorm eps is 1e-6, GELU is the exact
(erf) one, q/k/v come from one fused Dense, and the stochastic-depth rate of block i is
`linspace(0, drop_path_rate, depth)[i]`, dropping whole residual branches per example and scaling the
kept ones by 1/keep.

Module and parameter names follow timm's (`patch_embed/proj`, `blocks_{i}/attn/qkv`, `norm`, `head`, ...)
so that `robust_jax.models.convert.vit` maps them key by key. Initialisation is timm's default (the one
DeiT trains with): Linear weights truncated normal std .02 (bounds +-2, absolute), biases zero; the
class token and position embedding truncated normal std .02; LayerNorm ones/zeros; the patch conv keeps
PyTorch's default init. (timm 0.5.4 zero-initialises the head only in its 'jax' init modes.)

Randomness: dropout and drop-path draw from the 'dropout' rng stream, only when `train=True` and the
corresponding rate is positive; eval mode is deterministic and needs no rng. There is no BatchNorm: `bn`
is accepted for the common classifier signature and must be 'clean'.

The attention is its own module (`Attention`) with the probabilities computed explicitly by
`attention_probs`, so that ARD (spec/vit_at.md) can switch their backward pass off per block:
`model.apply(v, x, train=False, attn_grad_keep=keep)` with `keep` of shape (`model.num_attention_blocks`,)
stops the gradient of block b's probabilities (the input of `attn_drop`) where keep[b] is false; values are
unchanged. Attacks read `num_attention_blocks` and `patch_size` (PRM's patch grid) from the model.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.models import layers

LN_EPS = 1e-6
POOLS = ("token", "gap")


def trunc_normal_init(std: float = 0.02, bound: float = 2.0):
    """timm's `trunc_normal_(std=std)`: normal(0, std) truncated at +-`bound` in absolute units."""
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -bound / std, bound / std, shape, dtype)
    return init


def _torch_default_bias_init(fan_in: int):
    """PyTorch's default bias init of Conv2d/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    def init(key, shape, dtype=jnp.float32):
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -b, b)
    return init


def drop_path_rates(drop_path_rate: float, depth: int) -> tuple:
    """Per-block stochastic-depth rates, timm's rule: linspace(0, drop_path_rate, depth) (float32)."""
    return tuple(float(r) for r in np.linspace(0.0, drop_path_rate, depth, dtype=np.float32))


def drop_path(x, rate: float, key):
    """Zeroes whole examples of the residual branch `x` with probability `rate`; scales the rest by 1/keep."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x)) if keep > 0 else jnp.zeros_like(x)


def residual_drop_path(module: nn.Module, y, rate: float, train: bool):
    """`drop_path` of a block's residual branch `y` in train mode with a positive rate (its key from `module`'s
    'dropout' stream); the identity otherwise."""
    if train and rate > 0:
        return drop_path(y, rate, module.make_rng("dropout"))
    return y


def attention_probs(q, k, scale: float):
    """softmax(q k^T * scale) over the keys: [B, H, N, d] x [B, H, N, d] -> [B, H, N, N] (softmax in f32)."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)


def ard_switch(probs, keep):
    """ARD's gradient switch on attention probabilities (spec/vit_at.md): `probs` unchanged in value; their
    gradient passes where `keep` (a scalar bool or 0-1 value) is true and is zero otherwise."""
    return jnp.where(jnp.asarray(keep).astype(bool), probs, jax.lax.stop_gradient(probs))


def check_attn_grad_keep(attn_grad_keep, num_blocks: int):
    """`attn_grad_keep` as a bool array of shape (num_blocks,) (block order = forward order)."""
    keep = jnp.asarray(attn_grad_keep)
    if keep.shape != (num_blocks,):
        raise ValueError(f"attn_grad_keep must have shape (num_attention_blocks,) = ({num_blocks},), "
                         f"got {keep.shape}")
    return keep.astype(bool)


def _dense(features: int, name: str, dtype, use_bias: bool = True):
    return nn.Dense(features, use_bias=use_bias, kernel_init=trunc_normal_init(), bias_init=nn.initializers.zeros,
                    dtype=dtype, name=name)


def _layer_norm(name: str, dtype):
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv Dense -> explicit probabilities -> dropout -> @v -> proj -> dropout."""

    dim: int
    num_heads: int
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, grad_keep=None):
        """`grad_keep`: None, or a scalar bool/0-1 (ARD): where false, the attention probabilities are
        `stop_gradient`ed (the value path, projections and residuals still carry gradient)."""
        b, n, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"hidden_dim {c} is not divisible by num_heads {self.num_heads}")
        head_dim = c // self.num_heads
        qkv = _dense(3 * c, "qkv", self.dtype, use_bias=self.qkv_bias)(x)
        # timm's channel order of the fused projection: (3, heads, head_dim).
        qkv = qkv.reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        probs = attention_probs(q, k, head_dim ** -0.5)
        if grad_keep is not None:
            probs = ard_switch(probs, grad_keep)
        probs = nn.Dropout(self.attn_drop_rate, name="attn_drop")(probs, deterministic=not train)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b, n, c)
        out = _dense(c, "proj", self.dtype)(out)
        return nn.Dropout(self.proj_drop_rate, name="proj_drop")(out, deterministic=not train)


class Mlp(nn.Module):
    hidden: int
    drop_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = x.shape[-1]
        x = nn.gelu(_dense(self.hidden, "fc1", self.dtype)(x), approximate=False)
        x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        x = _dense(c, "fc2", self.dtype)(x)
        return nn.Dropout(self.drop_rate)(x, deterministic=not train)


class Block(nn.Module):
    """Pre-norm transformer block with per-example stochastic depth on both residual branches."""

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, attn_grad_keep=None):
        c = x.shape[-1]
        y = _layer_norm("norm1", self.dtype)(x)
        y = Attention(c, self.num_heads, self.qkv_bias, self.attn_drop_rate, self.drop_rate, self.dtype,
                      name="attn")(y, train=train, grad_keep=attn_grad_keep)
        x = x + residual_drop_path(self, y, self.drop_path_rate, train)
        y = _layer_norm("norm2", self.dtype)(x)
        y = Mlp(int(c * self.mlp_ratio), self.drop_rate, self.dtype, name="mlp")(y, train=train)
        return x + residual_drop_path(self, y, self.drop_path_rate, train)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: Conv(kernel = stride = patch_size) -> [B, num_patches, features]
    (row-major over the patch grid, as timm's flatten(2).transpose(1, 2))."""

    features: int
    patch_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        fan_in = x.shape[-1] * p * p
        x = nn.Conv(self.features, (p, p), strides=(p, p), padding="VALID", kernel_init=layers.torch_default_init,
                    bias_init=_torch_default_bias_init(fan_in), dtype=self.dtype,
                    conv_general_dilated=layers.conv_general_dilated, name="proj")(x)
        return x.reshape(x.shape[0], -1, self.features)


class VisionTransformer(nn.Module):
    """timm's ViT (class token, learned position embedding) on [0,1] NHWC images; returns float32 logits."""

    num_classes: int = 1000
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    image_size: int = 224
    patch_size: int = 16
    hidden_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    pool: str = "token"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_attention_blocks(self) -> int:
        """How many blocks `attn_grad_keep` switches (ARD): one per transformer block."""
        return self.depth

    @property
    def block_drop_path_rates(self) -> tuple:
        return drop_path_rates(self.drop_path_rate, self.depth)

    def _check_input(self, x, bn: str):
        if bn != "clean":
            raise ValueError(f"VisionTransformer has no BatchNorm: bn must be 'clean', got {bn!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if x.ndim != 4:
            raise ValueError(f"images must be NHWC (rank 4), got shape {x.shape}")
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"input images are {x.shape[1]}x{x.shape[2]} but this ViT's position embedding is "
                             f"fixed to image_size={self.image_size} ({self.image_size}x{self.image_size}); "
                             "resize the images or build the model with the matching image_size")
        if x.shape[-1] != len(self.mean):
            raise ValueError(f"images have {x.shape[-1]} channels, the model expects {len(self.mean)}")

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str = "clean", attn_grad_keep=None):
        """Logits of `x`. `attn_grad_keep` (ARD, used by attacks only): None, or bool/0-1 values of shape
        (num_attention_blocks,); where entry b is false, block b's attention probabilities pass no gradient.
        Forward values are the same either way."""
        self._check_input(x, bn)
        if attn_grad_keep is not None:
            attn_grad_keep = check_attn_grad_keep(attn_grad_keep, self.num_attention_blocks)
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        x = ((x - mean) / std).astype(self.dtype)

        p, d = self.patch_size, self.hidden_dim
        x = PatchEmbed(d, p, self.dtype, name="patch_embed")(x)
        b = x.shape[0]

        cls_token = self.param("cls_token", trunc_normal_init(), (1, 1, d), jnp.float32)
        pos_embed = self.param("pos_embed", trunc_normal_init(), (1, self.num_patches + 1, d), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, d)), x], axis=1)
        x = x + pos_embed.astype(self.dtype)
        x = nn.Dropout(self.drop_rate, name="pos_drop")(x, deterministic=not train)

        for i, rate in enumerate(self.block_drop_path_rates):
            x = Block(self.num_heads, self.mlp_ratio, self.qkv_bias, self.drop_rate, self.attn_drop_rate, rate,
                      self.dtype, name=f"blocks_{i}")(
                x, train=train, attn_grad_keep=None if attn_grad_keep is None else attn_grad_keep[i])
        x = _layer_norm("norm", self.dtype)(x)
        x = x[:, 0] if self.pool == "token" else jnp.mean(x[:, 1:], axis=1)
        return _dense(self.num_classes, "head", self.dtype)(x).astype(jnp.float32)
