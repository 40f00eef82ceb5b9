"""ResNets in two layouts, named like their PyTorch originals so checkpoints convert key by key.

* CIFAR layout (3x3 stem, no max-pool; Kuang Liu's `pytorch-cifar` ResNet-18, also used by
  AutoAttack's example model): `ResNet(stem='cifar', block='basic', stage_sizes=(2, 2, 2, 2))`.
* ImageNet layout (torchvision v1.5: 7x7/2 stem + max-pool, stride on the 3x3 conv of bottlenecks):
  `ResNet(stem='imagenet', block='bottleneck', stage_sizes=(3, 4, 6, 3))` is ResNet-50.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.staged import StagedClassifier


class Block(nn.Module):
    """Fields every residual block takes; `conv` builds a torch-padded conv with the block's init/dtype."""

    features: int
    stride: int
    norm: callable
    kernel_init: callable
    dtype: jnp.dtype = jnp.float32
    expansion = 1

    def conv(self, features, kernel, stride, name):
        return layers.conv(features, kernel, stride, name=name, kernel_init=self.kernel_init, dtype=self.dtype)


class BasicBlock(Block):
    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        conv = self.conv
        y = nn.relu(self.norm(name="bn1")(conv(self.features, 3, self.stride, "conv1")(x), train=train, bn=bn))
        y = self.norm(name="bn2")(conv(self.features, 3, 1, "conv2")(y), train=train, bn=bn)
        return nn.relu(y + _projection_shortcut(self, x, train, bn))


class Bottleneck(Block):
    expansion = 4

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        conv = self.conv
        y = nn.relu(self.norm(name="bn1")(conv(self.features, 1, 1, "conv1")(x), train=train, bn=bn))
        y = nn.relu(self.norm(name="bn2")(conv(self.features, 3, self.stride, "conv2")(y), train=train, bn=bn))
        y = self.norm(name="bn3")(conv(self.features * 4, 1, 1, "conv3")(y), train=train, bn=bn)
        return nn.relu(y + _projection_shortcut(self, x, train, bn))


def _projection_shortcut(block, x, train, bn):
    """Identity, or 1x1 conv + BN when the shape changes (`shortcut_conv`/`shortcut_bn`)."""
    out = block.features * block.expansion
    if block.stride == 1 and x.shape[-1] == out:
        return x
    s = block.conv(out, 1, block.stride, "shortcut_conv")(x)
    return block.norm(name="shortcut_bn")(s, train=train, bn=bn)


class Stage(nn.Module):
    """`num_blocks` blocks named '0', '1', ... (torch's `layerK.J`); the first may downsample."""

    block: type
    num_blocks: int
    features: int
    stride: int
    norm: callable
    kernel_init: callable
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        for j in range(self.num_blocks):
            x = self.block(self.features, self.stride if j == 0 else 1, self.norm, self.kernel_init, self.dtype,
                           name=str(j))(x, train=train, bn=bn)
        return x


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(StagedClassifier):
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    stem_type: str = "cifar"  # 'cifar' (3x3/1) or 'imagenet' (7x7/2 + max-pool)
    width: int = 64
    head_name: str = "linear"  # 'linear' in pytorch-cifar, 'fc' in torchvision

    def setup(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.stem_type not in ("cifar", "imagenet"):
            raise ValueError(f"stem_type must be 'cifar' or 'imagenet', got {self.stem_type!r}")
        init = layers.kaiming_normal_fan_out if self.stem_type == "imagenet" else layers.torch_default_init
        if self.stem_type == "imagenet":
            self.conv1 = layers.conv(self.width, 7, 2, padding=3, kernel_init=init, dtype=self.dtype)
        else:
            self.conv1 = layers.conv(self.width, 3, 1, kernel_init=init, dtype=self.dtype)
        self.bn1 = self.norm()
        for i, n in enumerate(self.stage_sizes):
            setattr(self, f"layer{i + 1}", Stage(BLOCKS[self.block], n, self.width * 2**i, 1 if i == 0 else 2,
                                                 self.norm, init, self.dtype))
        setattr(self, self.head_name, layers.dense(self.num_classes, dtype=self.dtype))

    @property
    def stage_names(self):
        return tuple(f"layer{i + 1}" for i in range(len(self.stage_sizes)))

    def stem(self, x, *, train, bn):
        x = nn.relu(self.bn1(self.conv1(x), train=train, bn=bn))
        if self.stem_type == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return x

    def head(self, x, *, train, bn):
        return getattr(self, self.head_name)(jnp.mean(x, axis=(1, 2)))
