"""Swin Transformer (Liu et al. 2021) with the semantics of timm 0.5.4's `SwinTransformer`.

    model = models.get('swin_tiny_patch4_window7_224', num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    logits = model.apply(variables, x, train=False)                    # x: [B, 224, 224, 3] in [0,1]
    logits = model.apply(variables, x, train=False, attn_grad_keep=g)  # ARD: g bool[model.num_attention_blocks]

Structure: normalise -> patch conv (kernel = stride = patch_size) + LayerNorm -> dropout -> stages; stage i
runs `depths[i]` blocks at width `embed_dim * 2**i` on a (image_size / patch_size / 2**i)^2 token grid and,
except the last stage, ends with patch merging (2x2 neighbours concatenated -> LayerNorm -> bias-free
Linear to twice the width) -> final LayerNorm -> mean over the tokens -> linear head.

A block is pre-norm: `x + drop_path(window_attention(norm1(x)))`, `x + drop_path(mlp(norm2(x)))`. The
attention runs inside non-overlapping `window_size` x `window_size` windows with a learned relative
position bias (one table row per relative offset, per head). Odd blocks of a stage cyclically roll the
grid by -window_size // 2 first (and back after), and add -100 to the logits between tokens that came
from different regions of the unrolled image, so a window never mixes pixels the roll wrapped around.
Where a stage's grid is no larger than `window_size`, its window is the whole grid and nothing is rolled
(timm's rule; e.g. the 7x7 last stage of the 224 px models). LayerNorm eps is 1e-5 (PyTorch's default,
which Swin uses, unlike the ViTs' 1e-6), GELU is exact (erf), q is scaled by head_dim**-0.5 before q k^T,
and the stochastic-depth rate of the b-th block (counted over all stages) is
`linspace(0, drop_path_rate, sum(depths))[b]`.

Tokens stay on their [B, H, W, C] grid between blocks; parameter names follow timm's
(`patch_embed/{proj,norm}`, `layers_{i}/blocks_{j}/attn/{qkv,proj,relative_position_bias_table}`,
`layers_{i}/downsample/{norm,reduction}`, `norm`, `head`) so `robust_jax.models.convert.swin` maps a timm
state_dict key by key. The relative position index and the shift masks are not parameters: they are
functions of the geometry, computed here (`relative_position_index`, `shifted_window_mask`).
Initialisation is timm's: Linear weights and the bias tables truncated normal std .02, zero biases,
LayerNorm ones/zeros, the patch conv with PyTorch's default.

ARD (spec/vit_at.md): `attn_grad_keep`, one entry per attention block in forward order over all stages,
makes block b's attention probabilities (the softmax output with bias and mask, the input of attention
dropout) pass gradient only where the entry is true/non-zero. Forward values never change.

Randomness: dropout and drop-path draw from the 'dropout' rng stream, only when `train=True` and the rate
is positive. There is no BatchNorm: `bn` must be 'clean'. The input size is fixed to `image_size`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.models import layers
from robust_jax.models import vit as vit_lib

LN_EPS = 1e-5
MASK_VALUE = -100.0  # added to the logits of token pairs from different regions of a rolled window


def relative_position_index(window: int) -> np.ndarray:
    """[N, N] int32 (N = window**2): the bias-table row of each (query, key) pair of a window.

    Tokens are row-major in the window; a pair's offset (dh, dw) = (h_q - h_k, w_q - w_k), each in
    [-(window-1), window-1], is shifted to start at 0 and flattened row-major over a (2w-1) x (2w-1) grid.
    """
    h, w = np.divmod(np.arange(window * window), window)
    dh = h[:, None] - h[None, :] + window - 1
    dw = w[:, None] - w[None, :] + window - 1
    return (dh * (2 * window - 1) + dw).astype(np.int32)


def shifted_window_mask(resolution: int, window: int, shift: int) -> np.ndarray:
    """[num_windows, N, N] float32: 0 between tokens of one region of the rolled grid, MASK_VALUE otherwise.

    After rolling a `resolution`^2 grid by -shift, the rows [0, r-w), [r-w, r-shift), [r-shift, r) (and the
    same columns) come from three bands of the original image; a token's region is its (row band, column
    band) pair. Windows are numbered row-major over the grid, tokens row-major inside a window.
    """
    bands = np.zeros(resolution, np.int32)
    bands[resolution - window:] = 1
    bands[resolution - shift:] = 2
    region = (3 * bands[:, None] + bands[None, :]).reshape(1, resolution, resolution, 1)
    region = window_partition(region, window)[0, :, :, 0]  # [num_windows, N]
    same = region[:, :, None] == region[:, None, :]
    return np.where(same, 0.0, MASK_VALUE).astype(np.float32)


def window_partition(x, window: int):
    """[B, H, W, C] -> [B, num_windows, window**2, C]; windows row-major over the grid, tokens row-major
    inside each window. Works on numpy and jax arrays."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_merge(x, window: int, height: int, width: int):
    """The inverse of `window_partition`: [B, num_windows, window**2, C] -> [B, height, width, C]."""
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, height // window, width // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


def attention_softmax(logits):
    """Softmax over the keys (last axis) in float32: the attention probabilities, ARD's switch point."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _dense(features: int, name: str, dtype, use_bias: bool = True):
    return nn.Dense(features, use_bias=use_bias, kernel_init=vit_lib.trunc_normal_init(),
                    bias_init=nn.initializers.zeros, dtype=dtype, name=name)


def _layer_norm(name: str, dtype):
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias per head.

    Input [B, num_windows, N, C] (N = window**2) and an optional additive mask [num_windows, N, N].
    """

    dim: int
    num_heads: int
    window_size: int
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask: Optional[np.ndarray] = None, *, train: bool, attn_grad_keep=None):
        b, nw, n, c = x.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        qkv = _dense(3 * c, "qkv", self.dtype, use_bias=self.qkv_bias)(x)
        # timm's channel order of the fused projection: (3, heads, head_dim).
        qkv = qkv.reshape(b, nw, n, 3, heads, head_dim).transpose(3, 0, 1, 4, 2, 5)  # [3, B, nW, H, N, d]
        q, k, v = qkv[0] * head_dim ** -0.5, qkv[1], qkv[2]
        logits = jnp.einsum("bwhqd,bwhkd->bwhqk", q, k).astype(jnp.float32)

        w = self.window_size
        table = self.param("relative_position_bias_table", vit_lib.trunc_normal_init(),
                           ((2 * w - 1) ** 2, heads), jnp.float32)
        bias = table[relative_position_index(w).reshape(-1)].reshape(n, n, heads).transpose(2, 0, 1)
        logits = logits + bias[None, None]
        if mask is not None:
            logits = logits + jnp.asarray(mask)[None, :, None]
        probs = attention_softmax(logits).astype(self.dtype)
        if attn_grad_keep is not None:
            probs = vit_lib.ard_switch(probs, attn_grad_keep)
        probs = nn.Dropout(self.attn_drop_rate, name="attn_drop")(probs, deterministic=not train)
        out = jnp.einsum("bwhqk,bwhkd->bwqhd", probs, v).reshape(b, nw, n, c)
        out = _dense(c, "proj", self.dtype)(out)
        return nn.Dropout(self.proj_drop_rate, name="proj_drop")(out, deterministic=not train)


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window-attention block on a [B, H, W, C] grid; `shift=0` is a plain W-MSA block."""

    num_heads: int
    window_size: int
    shift: int = 0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, attn_grad_keep=None):
        _, h, w, c = x.shape
        win, s = self.window_size, self.shift
        y = _layer_norm("norm1", self.dtype)(x)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        mask = shifted_window_mask(h, win, s) if s else None
        y = WindowAttention(c, self.num_heads, win, self.qkv_bias, self.attn_drop_rate, self.drop_rate, self.dtype,
                            name="attn")(window_partition(y, win), mask, train=train, attn_grad_keep=attn_grad_keep)
        y = window_merge(y, win, h, w)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + vit_lib.residual_drop_path(self, y, self.drop_path_rate, train)
        y = _layer_norm("norm2", self.dtype)(x)
        y = vit_lib.Mlp(int(c * self.mlp_ratio), self.drop_rate, self.dtype, name="mlp")(y, train=train)
        return x + vit_lib.residual_drop_path(self, y, self.drop_path_rate, train)


class PatchMerging(nn.Module):
    """[B, H, W, C] -> [B, H/2, W/2, 2C]: each 2x2 neighbourhood concatenated in the order (0,0), (1,0),
    (0,1), (1,1) (row, column offsets) -> LayerNorm(4C) -> bias-free Linear to 2C."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = _layer_norm("norm", self.dtype)(x)
        return _dense(2 * c, "reduction", self.dtype, use_bias=False)(x)


class SwinStage(nn.Module):
    """timm's `BasicLayer`: `blocks_{j}` (odd ones shifted) then, unless last, `downsample` (patch merging)."""

    depth: int
    num_heads: int
    window_size: int
    shift: int
    drop_path_rates: Sequence[float]
    downsample: bool
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, attn_grad_keep=None):
        for j in range(self.depth):
            keep = None if attn_grad_keep is None else attn_grad_keep[j]
            x = SwinBlock(self.num_heads, self.window_size, self.shift if j % 2 else 0, self.mlp_ratio,
                          self.qkv_bias, self.drop_rate, self.attn_drop_rate, self.drop_path_rates[j], self.dtype,
                          name=f"blocks_{j}")(x, train=train, attn_grad_keep=keep)
        return PatchMerging(self.dtype, name="downsample")(x) if self.downsample else x


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> [B, H/p, W/p, features]: Conv(kernel = stride = p) then LayerNorm."""

    features: int
    patch_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        bound = 1.0 / math.sqrt(x.shape[-1] * p * p)  # PyTorch's default conv bias init

        def bias_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        x = nn.Conv(self.features, (p, p), strides=(p, p), padding="VALID", kernel_init=layers.torch_default_init,
                    bias_init=bias_init, dtype=self.dtype, name="proj")(x)
        return _layer_norm("norm", self.dtype)(x)


class SwinTransformer(nn.Module):
    """timm's Swin Transformer on [0,1] NHWC images; returns float32 logits (see the module docstring)."""

    num_classes: int = 1000
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    image_size: int = 224
    patch_size: int = 4
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @property
    def num_attention_blocks(self) -> int:
        """Length of `attn_grad_keep`: every block of every stage, in forward order."""
        return int(sum(self.depths))

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def block_drop_path_rates(self) -> tuple:
        return vit_lib.drop_path_rates(self.drop_path_rate, self.num_attention_blocks)

    @property
    def stage_geometry(self) -> tuple:
        """((grid resolution, window, shift of the odd blocks), ...) per stage, with timm's rule that a grid
        no larger than `window_size` is one unshifted window."""
        out = []
        for i in range(len(self.depths)):
            res = self.image_size // self.patch_size // 2 ** i
            if res <= self.window_size:
                out.append((res, res, 0))
            else:
                out.append((res, self.window_size, self.window_size // 2))
        return tuple(out)

    def _check_geometry(self):
        if len(self.num_heads) != len(self.depths):
            raise ValueError(f"depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} differ in length")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for i, (res, win, _) in enumerate(self.stage_geometry):
            dim = self.embed_dim * 2 ** i
            if dim % self.num_heads[i]:
                raise ValueError(f"stage {i}: width {dim} is not divisible by num_heads {self.num_heads[i]}")
            if res < 1 or res % win:
                raise ValueError(f"stage {i}: the {res}x{res} token grid does not split into {win}x{win} windows "
                                 f"(image_size={self.image_size}, patch_size={self.patch_size}, "
                                 f"window_size={self.window_size})")
            if i < len(self.depths) - 1 and res % 2:
                raise ValueError(f"stage {i}: patch merging needs an even token grid, got {res}x{res} "
                                 f"(image_size={self.image_size})")

    def _check_input(self, x, bn: str, attn_grad_keep):
        if bn != "clean":
            raise ValueError(f"SwinTransformer has no BatchNorm: bn must be 'clean', got {bn!r}")
        self._check_geometry()
        if x.ndim != 4:
            raise ValueError(f"images must be NHWC (rank 4), got shape {x.shape}")
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"input images are {x.shape[1]}x{x.shape[2]} but this Swin is built for image_size="
                             f"{self.image_size} (its windows and shift masks depend on it); resize the images or "
                             "build the model with the matching image_size")
        if x.shape[-1] != len(self.mean):
            raise ValueError(f"images have {x.shape[-1]} channels, the model expects {len(self.mean)}")
        if attn_grad_keep is not None and jnp.shape(attn_grad_keep) != (self.num_attention_blocks,):
            raise ValueError(f"attn_grad_keep must have shape ({self.num_attention_blocks},) (one entry per "
                             f"attention block, depths={tuple(self.depths)}), got {jnp.shape(attn_grad_keep)}")

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str = "clean", attn_grad_keep=None):
        self._check_input(x, bn, attn_grad_keep)
        if attn_grad_keep is not None:
            attn_grad_keep = jnp.asarray(attn_grad_keep) != 0
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        x = ((x - mean) / std).astype(self.dtype)
        x = PatchEmbed(self.embed_dim, self.patch_size, self.dtype, name="patch_embed")(x)
        x = nn.Dropout(self.drop_rate, name="pos_drop")(x, deterministic=not train)

        rates, start = self.block_drop_path_rates, 0
        for i, (depth, (_, win, shift)) in enumerate(zip(self.depths, self.stage_geometry)):
            keep = None if attn_grad_keep is None else attn_grad_keep[start:start + depth]
            x = SwinStage(depth, self.num_heads[i], win, shift, rates[start:start + depth],
                          i < len(self.depths) - 1, self.mlp_ratio, self.qkv_bias, self.drop_rate,
                          self.attn_drop_rate, self.dtype, name=f"layers_{i}")(x, train=train, attn_grad_keep=keep)
            start += depth
        x = _layer_norm("norm", self.dtype)(x)
        x = jnp.mean(x, axis=(1, 2))
        return _dense(self.num_classes, "head", self.dtype)(x).astype(jnp.float32)
