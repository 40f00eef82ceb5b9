"""MART (Wang et al. 2020): boosted CE on x_adv + beta * KL(p(x) || p(x_adv)) weighted by 1 - p_y(x).

As the reference: the attack is PGD on CE in eval mode from x + 0.001 * N(0, I); then, in train mode,
  BCE   = CE(z_adv, y) - log(1.0001 - p_adv[y'] + 1e-12), y' = the most likely wrong class of p_adv;
  robust = mean_i KL(p(x_i) || p(x_adv_i)) * (1.0000001 - p_y(x_i)), with log(p_adv + 1e-12) inside the KL;
  loss = BCE + beta * robust.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods.base import (ATTACK_CONFIG, Classifier, Method, PGDAttack, accuracy, attack_from_config,
                                     training_rng)

CONFIG = dict(attack=ATTACK_CONFIG, beta=6.0)
REFERENCE_ATTACK = PGDAttack(random_start="normal")  # the reference's start; eps/steps are the recipe's


def mart_loss(apply_fn, params, model_state, batch, key, *, beta: float = 6.0,
              attack: PGDAttack = REFERENCE_ATTACK, epoch=None):
    """MART's objective (module docstring) on `attack`'s adversarial examples. `epoch`: the fractional training
    epoch, read only by the attack's ARD/PRM schedule (None: after its warm-up)."""
    check_batch(batch)
    classifier = Classifier(apply_fn)
    x, y = batch["image"], batch["label"]
    x_adv = attack.run(classifier, params, model_state, x, y, key, epoch=epoch)
    logits, model_state = classifier(params, model_state, x, train=True, rng=training_rng(key, 0))
    logits_adv, model_state = classifier(params, model_state, x_adv, train=True, rng=training_rng(key, 1))
    p_adv = jax.nn.softmax(logits_adv)
    p_nat = jax.nn.softmax(logits)
    y_onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    wrong = jnp.argmax(jnp.where(y_onehot, -jnp.inf, p_adv), axis=-1)
    p_wrong = jnp.take_along_axis(p_adv, wrong[:, None], -1)[:, 0]
    bce = jnp.mean(cross_entropy(logits_adv, y) - jnp.log(1.0001 - p_wrong + 1e-12))
    kl = jnp.sum(xlogy(p_nat, p_nat) - p_nat * jnp.log(p_adv + 1e-12), axis=-1)
    p_true = jnp.take_along_axis(p_nat, y[:, None], -1)[:, 0]
    robust = jnp.mean(kl * (1.0000001 - p_true))
    loss = bce + beta * robust
    metrics = {"loss": loss, "bce_loss": bce, "robust_loss": robust,
               "accuracy": accuracy(logits, y), "adv_accuracy": accuracy(logits_adv, y)}
    return loss, (model_state, metrics)


class MART(Method):
    CONFIG = CONFIG
    attack_schedule = True  # attack.ard / attack.prm and their schedule (ViT recipes, attacks.ard_prm)
    loss_fn = staticmethod(mart_loss)

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(attack=attack_from_config(cfg.attack), beta=float(cfg.beta))
