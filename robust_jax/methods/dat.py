"""Discrete Adversarial Training (Mao et al., NeurIPS 2022): adversarial training on VQGAN-quantised images.

The step of the reference (easyrobust's DAT `train_one_epoch`), for a batch after mixup/cutmix
(x, soft targets t), with Q(x) = VQGAN reconstruction in [0,1] and the classifier f in train mode:

    loss_clean = CE(f(x), t)                           on the raw images
    x_adv      = one-step L2 attack on CE(f(.), t) around Q(x), eps = step = 0.1, random start on the
                 eps-sphere with probability 0.8 per batch, model in train mode (`attack.train_mode`)
    loss       = loss_clean + CE(f(Q(x_adv)), t)       the adversarial input is Q(Q(x) + delta)

The VQGAN is frozen (`self.frozen`, passed to the jitted step as an argument) and never differentiated:
the gradient at Q(x) stands in for that of L(Q(x + delta)). `method.dat.variant='paper'` follows the
paper's min E[L(x) + max_delta L(Q(x + delta))] instead: the attack moves x itself, its gradients are
taken at Q(x_t) (straight-through), and the adversarial input is Q(x + delta). `attack.steps` > 1 runs a
multi-step attack. Differences from the reference, on purpose: the reference runs one more forward pass
after the attack and discards it (not done here); BatchNorm running statistics follow the two training
forward passes only (the attack's train-mode passes are discarded, as in `pgd_at`); the random-start coin
is drawn once per global batch (the reference draws once per GPU batch).
"""
from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp

from robust_jax.attacks.discrete import discrete_l2_attack
from robust_jax.attacks.losses import cross_entropy
from robust_jax.methods.base import accuracy
from robust_jax.methods.standard import Standard
from robust_jax.models import vqgan as vqgan_lib

VARIANTS = ("reference", "paper")
RANDOM_INIT = "random-init"  # method.vqgan.checkpoint value for smoke tests: an untrained VQGAN


def load_vqgan(cfg):
    """(VQModel, variables) from `config.method.vqgan`: a VQGAN training workdir, or a .msgpack file with
    the architecture given by `name` (+ `kwargs`)."""
    path = cfg.get("checkpoint", "")
    if not path:
        raise ValueError(
            "DAT needs a VQGAN: set method.vqgan.checkpoint to a VQGAN training workdir (e.g. train one with "
            "`python main.py --config configs/vqgan_digits.py --workdir runs/vqgan_digits`) or to a converted "
            ".msgpack (robust-jax-convert --model vqgan:openimages_f8_16384 ...) together with method.vqgan.name")
    if path == RANDOM_INIT:
        return _random_vqgan(cfg)
    if os.path.isdir(path):
        from robust_jax.vqgan_training import load_trained

        return load_trained(path)
    if not cfg.get("name"):
        raise ValueError(f"method.vqgan.checkpoint={path!r} is a variables file: set method.vqgan.name to its "
                         f"architecture, one of {', '.join(sorted(vqgan_lib.CONFIGS))}")
    model = vqgan_lib.get(cfg.name, **dict(cfg.get("kwargs", {})))
    return model, vqgan_lib.load(path, model)


def _random_vqgan(cfg):
    """An UNTRAINED VQGAN of architecture `cfg.name` + `cfg.kwargs`: only for smoke tests of the plumbing
    (its reconstructions are noise, so DAT with it is meaningless); says so in a warning."""
    if not cfg.get("name"):
        raise ValueError(f"method.vqgan.checkpoint={RANDOM_INIT!r} needs method.vqgan.name")
    model = vqgan_lib.get(cfg.name, **dict(cfg.get("kwargs", {})))
    warnings.warn(f"DAT runs with an untrained, randomly initialised VQGAN ({cfg.name}); use it for smoke tests "
                  "only", stacklevel=2)
    return model, jax.jit(model.init)(jax.random.key(0), vqgan_lib.init_input(model))


class DAT(Standard):
    def __init__(self, model, cfg, num_classes: int):
        super().__init__(model, cfg, num_classes)
        variant = cfg.dat.variant
        if variant not in VARIANTS:
            raise ValueError(f"method.dat.variant must be one of {VARIANTS}, got {variant!r}")
        if cfg.attack.norm != "l2":
            raise ValueError(f"DAT's attack is L2 (method.attack.norm='l2'), got {cfg.attack.norm!r}")
        if not 0.0 <= cfg.dat.start_prob <= 1.0:
            raise ValueError(f"method.dat.start_prob must lie in [0, 1], got {cfg.dat.start_prob}")
        self.vqgan, variables = load_vqgan(cfg.vqgan)
        self.frozen = {"vqgan": variables}

    def quantizer(self, frozen):
        """x in [0,1] -> Q(x), the VQGAN reconstruction in [0,1], without gradient."""
        return vqgan_lib.reconstructor(self.vqgan, frozen["vqgan"])

    def attack(self, params, model_state, x, targets, key, frozen):
        """The perturbed images before the final quantisation: Q(x) + delta for the reference variant,
        x + delta for the paper's. The classifier trains on `quantizer(frozen)` of them."""
        a, quantize = self.cfg.attack, self.quantizer(frozen)
        params, model_state = jax.lax.stop_gradient((params, model_state))

        def attack_loss(xa, k):
            logits, _ = self.classifier(params, model_state, xa, train=a.train_mode, rng=k)
            return jnp.mean(cross_entropy(logits, targets))

        paper = self.cfg.dat.variant == "paper"
        return discrete_l2_attack(attack_loss, x if paper else quantize(x), key, eps=a.eps, step_size=a.step_size,
                                  steps=a.steps, start_prob=self.cfg.dat.start_prob,
                                  grad_at=quantize if paper else None)

    def loss(self, params, model_state, batch, key, step, frozen):
        k_mix, k_clean, k_attack, k_adv = jax.random.split(key, 4)
        x, targets = self.targets(batch, k_mix)
        logits, model_state = self.classifier(params, model_state, x, train=True, rng=k_clean)
        clean_loss = jnp.mean(cross_entropy(logits, targets))
        x_adv = self.quantizer(frozen)(self.attack(params, model_state, x, targets, k_attack, frozen))
        adv_logits, model_state = self.classifier(params, model_state, x_adv, train=True, rng=k_adv)
        adv_loss = jnp.mean(cross_entropy(adv_logits, targets))
        loss = clean_loss + adv_loss
        return loss, (model_state, {"loss": loss, "clean_loss": clean_loss, "adv_loss": adv_loss,
                                    "accuracy": accuracy(logits, targets),
                                    "adv_accuracy": accuracy(adv_logits, targets)})
