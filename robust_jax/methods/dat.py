"""Discrete Adversarial Training (Mao et al., NeurIPS 2022): adversarial training on VQGAN-quantised images.

The step of the reference (easyrobust's DAT `train_one_epoch`), for a batch after mixup/cutmix
(x, soft targets t), with Q(x) = VQGAN reconstruction in [0,1] and the classifier f in train mode:

    loss_clean = CE(f(x), t)                           on the raw images
    x_adv      = one-step L2 attack on CE(f(.), t) around Q(x), eps = step = 0.1, random start on the
                 eps-sphere with probability 0.8 per batch, model in train mode (`attack_train_mode`)
    loss       = loss_clean + CE(f(Q(x_adv)), t)       the adversarial input is Q(Q(x) + delta)

The VQGAN is given, never loaded here, and never differentiated: its variables are an argument of the
loss (the train step passes them as frozen variables, not program constants), and the gradient at Q(x)
stands in for that of L(Q(x + delta)). `variant='paper'` follows the paper's
min E[L(x) + max_delta L(Q(x + delta))] instead: the attack moves x itself, its gradients are taken at
Q(x_t) (straight-through), and the adversarial input is Q(x + delta). `steps` > 1 runs a multi-step attack.
Differences from the reference, on purpose: the reference runs one more forward pass after the attack and
discards it (not done here); BatchNorm running statistics follow the two training forward passes only (the
attack's train-mode passes are discarded, as in `pgd_at`); the random-start coin is drawn once per global
batch (the reference draws once per GPU batch).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from robust_jax.attacks.discrete import discrete_l2_attack
from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods.base import Classifier, Method, accuracy, block_values
from robust_jax.methods.standard import CONFIG as MIXING_CONFIG
from robust_jax.methods.standard import mixed_targets, mixing_from_config
from robust_jax.mixing import BatchMixing
from robust_jax.models import vqgan as vqgan_lib
from robust_jax.models import vqgan_io

VARIANTS = ("reference", "paper")
RANDOM_INIT = vqgan_io.RANDOM_INIT
# vqgan: checkpoint = a VQGAN training workdir (configs/vqgan_*.py) or a converted .msgpack file; name/kwargs =
#   the architecture of a .msgpack file (robust_jax.models.vqgan.CONFIGS). dat: variant 'reference' (attack
#   Q(x), train on Q(Q(x)+delta), as easyrobust) or 'paper'; start_prob: probability of the random start,
#   drawn once per batch. The attack's eps/step_size/steps/train_mode come from method.attack (norm 'l2').
CONFIG = dict(MIXING_CONFIG, vqgan=dict(checkpoint="", name="", kwargs={}),
              dat=dict(variant="reference", start_prob=0.8))


def dat_attack(apply_fn, params, model_state, x, targets, key, *, quantize, eps: float = 0.1,
               step_size: float = 0.1, steps: int = 1, start_prob: float = 0.8, variant: str = "reference",
               attack_train_mode: bool = True):
    """The perturbed images before the final quantisation: Q(x) + delta for the reference variant,
    x + delta for the paper's (`quantize` = Q). The classifier trains on Q of them."""
    classifier = Classifier(apply_fn)
    params, model_state = jax.lax.stop_gradient((params, model_state))

    def attack_loss(xa, k):
        logits, _ = classifier(params, model_state, xa, train=attack_train_mode, rng=k)
        return jnp.mean(cross_entropy(logits, targets))

    paper = variant == "paper"
    return discrete_l2_attack(attack_loss, x if paper else quantize(x), key, eps=eps, step_size=step_size,
                              steps=steps, start_prob=start_prob, grad_at=quantize if paper else None)


def dat_loss(apply_fn, params, model_state, batch, key, *, vqgan: vqgan_lib.VQModel, vqgan_variables,
             mixing: Optional[BatchMixing] = None, eps: float = 0.1, step_size: float = 0.1, steps: int = 1,
             start_prob: float = 0.8, variant: str = "reference", attack_train_mode: bool = True):
    """DAT's objective (module docstring): clean CE + CE on the quantised adversarial images."""
    check_batch(batch)
    if variant not in VARIANTS:
        raise ValueError(f"DAT variant must be one of {VARIANTS}, got {variant!r}")
    classifier = Classifier(apply_fn)
    quantize = functools.partial(vqgan_lib.quantize, vqgan, vqgan_variables)
    k_mix, k_clean, k_attack, k_adv = jax.random.split(key, 4)
    x, targets = mixed_targets(batch, k_mix, mixing)
    logits, model_state = classifier(params, model_state, x, train=True, rng=k_clean)
    clean_loss = jnp.mean(cross_entropy(logits, targets))
    x_adv = quantize(dat_attack(apply_fn, params, model_state, x, targets, k_attack, quantize=quantize, eps=eps,
                                step_size=step_size, steps=steps, start_prob=start_prob, variant=variant,
                                attack_train_mode=attack_train_mode))
    adv_logits, model_state = classifier(params, model_state, x_adv, train=True, rng=k_adv)
    adv_loss = jnp.mean(cross_entropy(adv_logits, targets))
    loss = clean_loss + adv_loss
    return loss, (model_state, {"loss": loss, "clean_loss": clean_loss, "adv_loss": adv_loss,
                                "accuracy": accuracy(logits, targets),
                                "adv_accuracy": accuracy(adv_logits, targets)})


class DAT(Method):
    """The DAT adapter: the VQGAN named by `method.vqgan` is loaded by `models.vqgan_io` and handed to the
    loss as frozen variables (`self.frozen['vqgan']`), an argument of the jitted step."""

    CONFIG = CONFIG

    def __init__(self, model, cfg, num_classes: int, vqgan=None):
        super().__init__(model, cfg, num_classes)
        if vqgan is None:
            v = block_values(cfg.vqgan, CONFIG["vqgan"])
            vqgan = vqgan_io.load_spec(v["checkpoint"], v["name"], v["kwargs"])
        self.vqgan, variables = vqgan
        self.frozen = {"vqgan": variables}

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        a, d = cfg.attack, block_values(cfg.dat, CONFIG["dat"])
        if d["variant"] not in VARIANTS:
            raise ValueError(f"method.dat.variant must be one of {VARIANTS}, got {d['variant']!r}")
        if a.norm != "l2":
            raise ValueError(f"DAT's attack is L2 (method.attack.norm='l2'), got {a.norm!r}")
        if not 0.0 <= d["start_prob"] <= 1.0:
            raise ValueError(f"method.dat.start_prob must lie in [0, 1], got {d['start_prob']}")
        return dict(mixing=mixing_from_config(cfg, num_classes), eps=a.eps, step_size=a.step_size, steps=a.steps,
                    attack_train_mode=a.train_mode, **d)

    def quantizer(self, frozen):
        """x in [0,1] -> Q(x), the VQGAN reconstruction in [0,1], without gradient."""
        return functools.partial(vqgan_lib.quantize, self.vqgan, frozen["vqgan"])

    def attack(self, params, model_state, x, targets, key, frozen):
        """`dat_attack` with this run's settings and VQGAN."""
        s = {k: v for k, v in self.settings.items() if k != "mixing"}
        return dat_attack(self.model.apply, params, model_state, x, targets, key, quantize=self.quantizer(frozen), **s)

    def loss(self, params, model_state, batch, key, step, frozen):
        return dat_loss(self.model.apply, params, model_state, batch, key, vqgan=self.vqgan,
                        vqgan_variables=frozen["vqgan"], **self.settings)
