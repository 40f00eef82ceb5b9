"""Standard (non-adversarial) training: cross-entropy, with optional label smoothing, mixup, cutmix."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from robust_jax import mixing as mixing_lib
from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods.base import Classifier, Method, accuracy, block_values

CONFIG = dict(mixing_lib.CONFIG)  # mixup_alpha, cutmix_alpha, label_smoothing, mix_prob, cutmix_prob


def mixed_targets(batch, key, mixing: Optional[mixing_lib.BatchMixing]):
    """Images and (soft) targets after `mixing` (None: the batch as it is)."""
    if mixing is None:
        return batch["image"], batch["label"]
    return mixing(key, batch["image"], batch["label"])


def standard_loss(apply_fn, params, model_state, batch, key, *,
                  mixing: Optional[mixing_lib.BatchMixing] = None):
    """Mean cross-entropy of the model in train mode on the (optionally mixed) batch."""
    check_batch(batch)
    x, targets = mixed_targets(batch, key, mixing)
    # fold_in, not split: the mixing key stays `key`, so runs without dropout are unchanged.
    logits, model_state = Classifier(apply_fn)(params, model_state, x, train=True, rng=jax.random.fold_in(key, 1))
    loss = jnp.mean(cross_entropy(logits, targets))
    return loss, (model_state, {"loss": loss, "accuracy": accuracy(logits, targets)})


def mixing_from_config(cfg, num_classes: int) -> Optional[mixing_lib.BatchMixing]:
    """The batch mixing `config.method` asks for, or None when it asks for none."""
    mixing = mixing_lib.BatchMixing(num_classes=num_classes, **block_values(cfg, CONFIG))
    return mixing if mixing.active else None


class Standard(Method):
    CONFIG = CONFIG
    loss_fn = staticmethod(standard_loss)

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(mixing=mixing_from_config(cfg, num_classes))

    def targets(self, batch, key):
        """Images and (soft) targets after the configured batch mixing and label smoothing."""
        return mixed_targets(batch, key, self.settings["mixing"])
