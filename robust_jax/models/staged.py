"""The common skeleton of our convolutional classifiers: normalise -> stem -> stages -> head.

Cut points are stage indices: 0 is the stem's output, k >= 1 the output of the k-th stage. Methods
that act on features call `front(x, cut=k)` then `back(f, cut=k)` (AdvBN); `__call__` is
`back(front(x, cut=0), cut=0)`. Every stage output is sown into the `intermediates` collection under
`<stage>_out` (`stem_out`, `layer1_out`, ...) for feature-based methods (MixACM); ask for it with
`mutable=['intermediates']`.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from robust_jax.models import layers


class StagedClassifier(nn.Module):
    """Base class. Subclasses build `self.stage_names` modules (each `(x, *, train, bn)`), in setup."""

    num_classes: int = 10
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    dual_bn: bool = False
    bn_group_size: Optional[int] = None
    dtype: jnp.dtype = jnp.float32

    # --- to be provided by subclasses -------------------------------------------------------------
    def stem(self, x, *, train: bool, bn: str):
        raise NotImplementedError

    def head(self, x, *, train: bool, bn: str):
        raise NotImplementedError

    @property
    def stage_names(self) -> Sequence[str]:
        raise NotImplementedError

    # --- shared machinery ------------------------------------------------------------------------
    @property
    def norm(self):
        """A BatchNorm factory (a plain partial, so blocks construct it in their own scope)."""
        return functools.partial(layers.batch_norm, dual=self.dual_bn, group_size=self.bn_group_size,
                                 dtype=self.dtype)

    @property
    def num_cuts(self) -> int:
        return 1 + len(self.stage_names)

    def _check_cut(self, cut: int):
        if not 0 <= cut < self.num_cuts:
            raise ValueError(f"cut must be in [0, {self.num_cuts - 1}] for {type(self).__name__}, got {cut}")

    def front(self, x, *, cut: int, train: bool, bn: str = "clean"):
        """[0,1] images -> features after cut point `cut`."""
        self._check_cut(cut)
        x = self._normalize(x)
        x = self.stem(x, train=train, bn=bn)
        self.sow("intermediates", "stem_out", x)
        for name in self.stage_names[:cut]:
            x = getattr(self, name)(x, train=train, bn=bn)
            self.sow("intermediates", f"{name}_out", x)
        return x

    def back(self, f, *, cut: int, train: bool, bn: str = "clean"):
        """Features after cut point `cut` -> logits."""
        self._check_cut(cut)
        for name in self.stage_names[cut:]:
            f = getattr(self, name)(f, train=train, bn=bn)
            self.sow("intermediates", f"{name}_out", f)
        return self.head(f, train=train, bn=bn).astype(jnp.float32)

    def _normalize(self, x):
        if x.ndim != 4:
            raise ValueError(f"images must be NHWC (rank 4), got shape {x.shape}")
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        if x.shape[-1] != mean.shape[0]:
            raise ValueError(f"images have {x.shape[-1]} channels, the model expects {mean.shape[0]}")
        return ((x - mean) / std).astype(self.dtype)

    def __call__(self, x, *, train: bool, bn: str = "clean"):
        return self.back(self.front(x, cut=0, train=train, bn=bn), cut=0, train=train, bn=bn)
