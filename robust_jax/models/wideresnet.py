"""WideResNet-D-K in the layout of the TRADES/MART references (pre-activation blocks).

Torch names: `conv1`, `blockS.layer.J.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1`, `fc`; our blocks sit at
`blockS/J`. (TRADES' WRN-34-10 also carries an unused `sub_block1`; the converter drops it.)
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.resnet import Block, Stage
from robust_jax.models.staged import StagedClassifier


class WideBlock(Block):
    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        conv = self.conv
        pre = nn.relu(self.norm(name="bn1")(x, train=train, bn=bn))
        equal_in_out = x.shape[-1] == self.features
        if equal_in_out and self.stride != 1:
            raise ValueError("WideBlock with equal widths must have stride 1")
        out = conv(self.features, 3, self.stride, "conv1")(pre)
        out = conv(self.features, 3, 1, "conv2")(nn.relu(self.norm(name="bn2")(out, train=train, bn=bn)))
        shortcut = x if equal_in_out else conv(self.features, 1, self.stride, "convShortcut")(pre)
        return shortcut + out


class WideResNet(StagedClassifier):
    depth: int = 28
    widen_factor: int = 10

    def setup(self):
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {self.depth}")
        n = (self.depth - 4) // 6
        widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
        init = layers.kaiming_normal_fan_out
        self.conv1 = layers.conv(16, 3, 1, kernel_init=init, dtype=self.dtype)
        for i, w in enumerate(widths):
            setattr(self, f"block{i + 1}", Stage(WideBlock, n, w, 1 if i == 0 else 2, self.norm, init, self.dtype))
        self.bn1 = self.norm()
        self.fc = layers.dense(self.num_classes, dtype=self.dtype)

    @property
    def stage_names(self):
        return ("block1", "block2", "block3")

    def stem(self, x, *, train, bn):
        return self.conv1(x)

    def head(self, x, *, train, bn):
        x = nn.relu(self.bn1(x, train=train, bn=bn))
        return self.fc(jnp.mean(x, axis=(1, 2)))
