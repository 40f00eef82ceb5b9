"""PGD adversarial training (Madry et al. 2018; the recipe of Rice, Wong & Kolter 2020).

loss = CE(f(x_adv), y), x_adv = PGD-k (uniform random start) on CE. In the Rice et al. reference the
attack runs with the model in train mode (batch statistics): `attack.train_mode=True` by default.
Difference, documented: there the attack's forward passes also update the BN running statistics;
here they are discarded, so running statistics follow the training forward passes only.
"""
from __future__ import annotations

import jax.numpy as jnp

from robust_jax.attacks.losses import cross_entropy
from robust_jax.methods.base import Method, accuracy, run_attack


class PGDAT(Method):
    def loss(self, params, model_state, batch, key, step):
        x, y = batch["image"], batch["label"]
        x_adv = run_attack(self.classifier, self.cfg.attack, params, model_state, x, y, key)
        logits, model_state = self.classifier(params, model_state, x_adv, train=True)
        loss = jnp.mean(cross_entropy(logits, y))
        return loss, (model_state, {"loss": loss, "adv_accuracy": accuracy(logits, y)})
