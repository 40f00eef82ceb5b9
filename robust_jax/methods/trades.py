"""TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv)).

As the reference: the attack maximises KL(p(x) || p(x_adv)) with the model in eval mode, from
x + 0.001 * N(0, I); the training loss is computed in train mode with gradients through both the
clean and the adversarial distributions, KL averaged over the batch ('batchmean').
Difference, documented: the reference runs the clean forward pass twice in train mode (once for CE,
once inside the KL), updating BN running statistics three times per step; we run it once (two updates).
"""
from __future__ import annotations

import jax.numpy as jnp

from robust_jax.attacks.losses import cross_entropy, kl_divergence
from robust_jax.checks import check_batch
from robust_jax.methods.base import (ATTACK_CONFIG, Classifier, Method, PGDAttack, accuracy, attack_from_config,
                                     training_rng)

CONFIG = dict(attack=ATTACK_CONFIG, beta=6.0)
REFERENCE_ATTACK = PGDAttack(random_start="normal")  # the reference's start; eps/steps are the recipe's


def trades_loss(apply_fn, params, model_state, batch, key, *, beta: float = 6.0,
                attack: PGDAttack = REFERENCE_ATTACK, epoch=None):
    """CE on x plus beta times the batch-mean KL between the predictions on x and on x_adv, where x_adv
    maximises that KL (the `attack`'s own loss is replaced by it). `epoch`: the fractional training epoch,
    read only by the attack's ARD/PRM schedule (None: after its warm-up)."""
    check_batch(batch)
    classifier = Classifier(apply_fn)
    x, y = batch["image"], batch["label"]
    attack_logits = classifier.logits_fn(params, model_state, train=attack.train_mode)(x)
    x_adv = attack.run(classifier, params, model_state, x, y, key,
                       loss=lambda logits, _: kl_divergence(attack_logits, logits), epoch=epoch)
    logits, model_state = classifier(params, model_state, x, train=True, rng=training_rng(key, 0))
    logits_adv, model_state = classifier(params, model_state, x_adv, train=True, rng=training_rng(key, 1))
    natural = jnp.mean(cross_entropy(logits, y))
    robust = jnp.mean(kl_divergence(logits, logits_adv))
    loss = natural + beta * robust
    metrics = {"loss": loss, "natural_loss": natural, "robust_loss": robust,
               "accuracy": accuracy(logits, y), "adv_accuracy": accuracy(logits_adv, y)}
    return loss, (model_state, metrics)


class TRADES(Method):
    CONFIG = CONFIG
    attack_schedule = True  # attack.ard / attack.prm and their schedule (ViT recipes, attacks.ard_prm)
    loss_fn = staticmethod(trades_loss)

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(attack=attack_from_config(cfg.attack), beta=float(cfg.beta))
