"""Building blocks of taming's VQGAN encoder/decoder in Flax (NHWC): GroupNorm(32), swish, residual
blocks, single-head spatial attention, the asymmetric-pad downsampler and the nearest-neighbour upsampler.

Names follow taming's PyTorch modules (`norm1`, `conv1`, `nin_shortcut`, `q`/`k`/`v`/`proj_out`, ...) so
that a checkpoint maps onto them key by key (robust_jax/models/convert/taming.py).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD1 = ((1, 1), (1, 1))


def norm(name=None):
    """taming's Normalize: GroupNorm with 32 groups, eps 1e-6; the variance as torch computes it (two pass)."""
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=False, name=name)


def swish(x):
    return x * jax.nn.sigmoid(x)


def conv3(features, name=None, strides=1, padding=PAD1):
    return nn.Conv(features, (3, 3), strides=(strides, strides), padding=padding, name=name)


def conv1(features, name=None):
    return nn.Conv(features, (1, 1), padding="VALID", name=name)


class ResnetBlock(nn.Module):
    """x + conv(dropout(swish(norm(conv(swish(norm(x))))))), with a 1x1 `nin_shortcut` when widths differ."""

    out_channels: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        h = conv3(self.out_channels, "conv1")(swish(norm("norm1")(x)))
        h = swish(norm("norm2")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3(self.out_channels, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv1(self.out_channels, "nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions with all channels: x + proj_out(softmax(q k^T / sqrt(C)) v)."""

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = norm("norm")(x)
        q, k, v = (conv1(c, n)(y).reshape(b, h * w, c) for n in ("q", "k", "v"))
        weights = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) * (c ** -0.5), axis=-1)
        out = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, h, w, c)
        return x + conv1(c, "proj_out")(out)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a 3x3 stride-2 conv without padding (torch's pad (0,1,0,1));
    'SAME' padding would pad differently on odd sizes."""

    @nn.compact
    def __call__(self, x):
        return conv3(x.shape[-1], "conv", strides=2, padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    @nn.compact
    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv3(x.shape[-1], "conv")(x)


class Mid(nn.Module):
    """block_1 -> attn_1 -> block_2 at the lowest resolution."""

    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        c = x.shape[-1]
        x = ResnetBlock(c, self.dropout, name="block_1")(x, train=train)
        x = AttnBlock(name="attn_1")(x)
        return ResnetBlock(c, self.dropout, name="block_2")(x, train=train)


def attention_levels(ch_mult: Sequence[int], resolution: int, attn_resolutions: Sequence[int]):
    """Which levels carry attention: level i works at resolution / 2**i of the *nominal* resolution."""
    return [resolution // 2 ** i in tuple(attn_resolutions) for i in range(len(ch_mult))]


class Encoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    attn_resolutions: Sequence[int]
    resolution: int
    z_channels: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        attn = attention_levels(self.ch_mult, self.resolution, self.attn_resolutions)
        h = conv3(self.ch, "conv_in")(x)
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = ResnetBlock(self.ch * mult, self.dropout, name=f"down_{i}_block_{j}")(h, train=train)
                if attn[i]:
                    h = AttnBlock(name=f"down_{i}_attn_{j}")(h)
            if i != len(self.ch_mult) - 1:
                h = Downsample(name=f"down_{i}_downsample")(h)
        h = Mid(self.dropout, name="mid")(h, train=train)
        return conv3(self.z_channels, "conv_out")(swish(norm("norm_out")(h)))


class Decoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    attn_resolutions: Sequence[int]
    resolution: int
    out_ch: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, z, *, train: bool = False):
        attn = attention_levels(self.ch_mult, self.resolution, self.attn_resolutions)
        h = conv3(self.ch * self.ch_mult[-1], "conv_in")(z)
        h = Mid(self.dropout, name="mid")(h, train=train)
        for i in reversed(range(len(self.ch_mult))):
            for j in range(self.num_res_blocks + 1):
                h = ResnetBlock(self.ch * self.ch_mult[i], self.dropout, name=f"up_{i}_block_{j}")(h, train=train)
                if attn[i]:
                    h = AttnBlock(name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = Upsample(name=f"up_{i}_upsample")(h)
        h = swish(norm("norm_out")(h))
        # The last conv's input, for taming's adaptive GAN weight (gradient norms at the last layer); kept
        # only when the caller asks for the 'intermediates' collection.
        self.sow("intermediates", "conv_out_input", h)
        return conv3(self.out_ch, "conv_out")(h)
