"""A small BatchNorm CNN for the embedded `digits` data: trains in seconds on a CPU core."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.staged import StagedClassifier


class ConvBNReLU(nn.Module):
    features: int
    stride: int
    norm: callable
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, bn: str):
        x = layers.conv(self.features, 3, self.stride, name="conv", dtype=self.dtype)(x)
        return nn.relu(self.norm(name="bn")(x, train=train, bn=bn))


class SmallCNN(StagedClassifier):
    """conv(w) -> conv(2w, /2) -> conv(4w, /2) -> global mean -> dense; cuts 0, 1, 2."""

    widths: Sequence[int] = (32, 64, 128)

    def setup(self):
        self.conv0 = ConvBNReLU(self.widths[0], 1, self.norm, self.dtype)
        for i, w in enumerate(self.widths[1:]):
            setattr(self, f"layer{i + 1}", ConvBNReLU(w, 2, self.norm, self.dtype))
        self.fc = layers.dense(self.num_classes, dtype=self.dtype)

    @property
    def stage_names(self):
        return tuple(f"layer{i + 1}" for i in range(len(self.widths) - 1))

    def stem(self, x, *, train, bn):
        return self.conv0(x, train=train, bn=bn)

    def head(self, x, *, train, bn):
        return self.fc(jnp.mean(x, axis=(1, 2)))
