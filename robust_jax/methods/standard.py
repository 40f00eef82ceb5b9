"""Standard (non-adversarial) training: cross-entropy, with optional label smoothing, mixup, cutmix."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_jax.attacks.losses import cross_entropy
from robust_jax.data import mix
from robust_jax.methods.base import Method, accuracy


class Standard(Method):
    def targets(self, batch, key):
        """Images and (soft) targets after the configured batch mixing and label smoothing."""
        return mix.mix_batch(key, batch["image"], batch["label"], num_classes=self.num_classes,
                             mixup_alpha=self.cfg.get("mixup_alpha", 0.0),
                             cutmix_alpha=self.cfg.get("cutmix_alpha", 0.0),
                             label_smoothing=self.cfg.get("label_smoothing", 0.0))

    def loss(self, params, model_state, batch, key, step):
        x, targets = self.targets(batch, key)
        # fold_in, not split: the mixing key stays `key`, so runs without dropout are unchanged.
        logits, model_state = self.classifier(params, model_state, x, train=True, rng=jax.random.fold_in(key, 1))
        loss = jnp.mean(cross_entropy(logits, targets))
        return loss, (model_state, {"loss": loss, "accuracy": accuracy(logits, targets)})
