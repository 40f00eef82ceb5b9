"""Batch-level augmentations that run inside the jitted step: mixup, cutmix, label smoothing.

They return soft targets [B, K]; `attacks.losses.cross_entropy` accepts them directly. `BatchMixing`
holds the settings, as the losses of `robust_jax.methods` take them.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def smooth(labels, num_classes: int, label_smoothing: float = 0.0):
    """One-hot targets with `label_smoothing` mass spread uniformly over all classes."""
    onehot = jax.nn.one_hot(labels, num_classes)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def mixup(key, x, targets, alpha: float):
    """Zhang et al.: lam ~ Beta(alpha, alpha); convex combination with a random permutation of the batch."""
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def cutmix(key, x, targets, alpha: float):
    """Yun et al.: paste a box of area ~(1 - lam) from a permuted batch; targets mixed by the exact area."""
    k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
    _, h, w, _ = x.shape
    lam = jax.random.beta(k_lam, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = jnp.round(h * cut), jnp.round(w * cut)
    cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
    perm = jax.random.permutation(k_perm, x.shape[0])
    lam_area = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return jnp.where(box, x[perm], x), lam_area * targets + (1 - lam_area) * targets[perm]


def mix_batch(key, x, labels, *, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              label_smoothing: float = 0.0, mix_prob: float = 1.0, cutmix_prob: float = 0.5):
    """(x, labels) unchanged when nothing is configured; otherwise (mixed x, soft targets [B, K]).
    A batch is mixed with probability `mix_prob` (else only its labels are smoothed); with both alphas set,
    a mixed batch uses cutmix with probability `cutmix_prob`, else mixup. timm's `Mixup` in 'batch' mode
    (its `prob` and `switch_prob`); timm pairs each image with the reversed batch, we with a random
    permutation of it."""
    for name, p in (("mix_prob", mix_prob), ("cutmix_prob", cutmix_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mix_batch: {name} is a probability in [0, 1], got {p}")
    if not (mixup_alpha or cutmix_alpha or label_smoothing):
        return x, labels
    targets = smooth(labels, num_classes, label_smoothing)
    if not (mixup_alpha or cutmix_alpha) or mix_prob == 0.0:
        return x, targets
    k_switch, k_mix = jax.random.split(key)
    if mixup_alpha and cutmix_alpha:
        def mixed():
            return jax.lax.cond(jax.random.bernoulli(k_switch, cutmix_prob),
                                lambda: cutmix(k_mix, x, targets, cutmix_alpha),
                                lambda: mixup(k_mix, x, targets, mixup_alpha))
    elif mixup_alpha:
        def mixed():
            return mixup(k_mix, x, targets, mixup_alpha)
    else:
        def mixed():
            return cutmix(k_mix, x, targets, cutmix_alpha)
    if mix_prob == 1.0:
        return mixed()
    # The draw whether to mix comes from its own stream, so mix_prob = 1 leaves every other draw as it was.
    return jax.lax.cond(jax.random.bernoulli(jax.random.fold_in(key, 2), mix_prob), mixed, lambda: (x, targets))


@dataclasses.dataclass(frozen=True)
class BatchMixing:
    """Settings of `mix_batch`: `BatchMixing(num_classes=10, mixup_alpha=0.2)(key, x, labels)`."""

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    mix_prob: float = 1.0
    cutmix_prob: float = 0.5

    @property
    def active(self) -> bool:
        """Whether the batch changes at all (an alpha or label smoothing is set)."""
        return bool(self.mixup_alpha or self.cutmix_alpha or self.label_smoothing)

    def __call__(self, key, x, labels):
        return mix_batch(key, x, labels, num_classes=self.num_classes, mixup_alpha=self.mixup_alpha,
                         cutmix_alpha=self.cutmix_alpha, label_smoothing=self.label_smoothing,
                         mix_prob=self.mix_prob, cutmix_prob=self.cutmix_prob)


CONFIG = {f.name: f.default for f in dataclasses.fields(BatchMixing) if f.name != "num_classes"}
