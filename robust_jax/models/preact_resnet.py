"""Pre-activation ResNet-18 in the CIFAR layout of Rice, Wong & Kolter (2020), the PGD-AT baseline.

Torch names: `conv1`, `layerK.J.{bn1,conv1,bn2,conv2,shortcut.0}`, `bn`, `linear`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.resnet import Block, Stage
from robust_jax.models.staged import StagedClassifier


class PreActBlock(Block):
    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        conv = self.conv
        out = nn.relu(self.norm(name="bn1")(x, train=train, bn=bn))
        needs_projection = self.stride != 1 or x.shape[-1] != self.features
        shortcut = conv(self.features, 1, self.stride, "shortcut_conv")(out) if needs_projection else x
        out = conv(self.features, 3, self.stride, "conv1")(out)
        out = conv(self.features, 3, 1, "conv2")(nn.relu(self.norm(name="bn2")(out, train=train, bn=bn)))
        return out + shortcut


class PreActResNet(StagedClassifier):
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64

    def setup(self):
        init = layers.torch_default_init
        self.conv1 = layers.conv(self.width, 3, 1, kernel_init=init, dtype=self.dtype)
        for i, n in enumerate(self.stage_sizes):
            setattr(self, f"layer{i + 1}", Stage(PreActBlock, n, self.width * 2**i, 1 if i == 0 else 2,
                                                 self.norm, init, self.dtype))
        self.bn = self.norm()
        self.linear = layers.dense(self.num_classes, dtype=self.dtype)

    @property
    def stage_names(self):
        return tuple(f"layer{i + 1}" for i in range(len(self.stage_sizes)))

    def stem(self, x, *, train, bn):
        return self.conv1(x)

    def head(self, x, *, train, bn):
        x = nn.relu(self.bn(x, train=train, bn=bn))
        return self.linear(jnp.mean(x, axis=(1, 2)))
