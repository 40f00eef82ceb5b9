"""PGD adversarial training (Madry et al. 2018; the recipe of Rice, Wong & Kolter 2020).

loss = CE(f(x_adv), y), x_adv = PGD-k (uniform random start) on CE. In the Rice et al. reference the
attack runs with the model in train mode (batch statistics): their recipe sets `attack.train_mode=True`.
Difference, documented: there the attack's forward passes also update the BN running statistics;
here they are discarded, so running statistics follow the training forward passes only.
With `mixing` (the ViT recipes of Mo et al. 2022, after timm's Mixup) the batch is mixed before the attack,
and both the attack and the loss use the CE to the soft targets, as that reference does.
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from robust_jax import mixing as mixing_lib
from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods.base import (ATTACK_CONFIG, Classifier, Method, PGDAttack, accuracy, attack_from_config,
                                     mixing_rng, training_rng)
from robust_jax.methods.standard import mixed_targets, mixing_from_config

CONFIG = dict(attack=ATTACK_CONFIG, **mixing_lib.CONFIG)


def pgd_at_loss(apply_fn, params, model_state, batch, key, *, attack: PGDAttack = PGDAttack(),
                mixing: Optional[mixing_lib.BatchMixing] = None, epoch=None):
    """Mean CE of the model in train mode on `attack`'s adversarial examples. `mixing`: mix the batch first
    (mixup / cutmix / label smoothing); the attack then ascends, and the loss is, the CE to the soft targets.
    `epoch`: the fractional training epoch, read only by the attack's ARD/PRM schedule (None: after its warm-up)."""
    check_batch(batch)
    classifier = Classifier(apply_fn)
    x, y = mixed_targets(batch, mixing_rng(key), mixing)
    x_adv = attack.run(classifier, params, model_state, x, y, key, epoch=epoch)
    logits, model_state = classifier(params, model_state, x_adv, train=True, rng=training_rng(key))
    loss = jnp.mean(cross_entropy(logits, y))
    return loss, (model_state, {"loss": loss, "adv_accuracy": accuracy(logits, y)})


class PGDAT(Method):
    CONFIG = CONFIG
    attack_schedule = True  # attack.ard / attack.prm and their schedule (ViT recipes, attacks.ard_prm)
    loss_fn = staticmethod(pgd_at_loss)

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(attack=attack_from_config(cfg.attack), mixing=mixing_from_config(cfg, num_classes))
