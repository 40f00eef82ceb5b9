"""Training objectives: pure loss functions (`standard_loss`, `pgd_at_loss`, `trades_loss`, `mart_loss`,
`dat_loss`, `advbn_loss`, `amp_loss`, `mixacm_loss`) usable from any JAX training loop, and their config
adapters by name:
`methods.get(config.method, model, num_classes)` -> object with `.loss` for the generic train step.

A method is its own module (the loss, its `CONFIG` block of `config.method`, its adapter) plus one line
in `REGISTRY`; `config_defaults()` composes the blocks into the `config.method` schema.
"""
from __future__ import annotations

from robust_jax.methods.advbn import AdvBNFineTuning, advbn_loss
from robust_jax.methods.amp import AMP, amp_loss
from robust_jax.methods.base import Classifier, Method, PGDAttack
from robust_jax.methods.dat import DAT, dat_loss
from robust_jax.methods.mart import MART, mart_loss
from robust_jax.methods.mixacm import MixACM, mixacm_loss
from robust_jax.methods.pgd_at import PGDAT, pgd_at_loss
from robust_jax.methods.standard import Standard, standard_loss
from robust_jax.methods.trades import TRADES, trades_loss

REGISTRY = {"standard": Standard, "pgd_at": PGDAT, "trades": TRADES, "mart": MART, "dat": DAT,
            "advbn": AdvBNFineTuning, "amp": AMP, "mixacm": MixACM}

__all__ = ["REGISTRY", "get", "trainable_mask", "init_params", "config_defaults", "Classifier", "Method", "PGDAttack",
           "standard_loss", "pgd_at_loss", "trades_loss", "mart_loss", "dat_loss", "advbn_loss", "amp_loss",
           "mixacm_loss"]


def _cls(cfg):
    if cfg.name not in REGISTRY:
        raise ValueError(f"unknown method {cfg.name!r}; known methods: {', '.join(sorted(REGISTRY))} "
                         "(VQGAN training configs, method.name='vqgan', run through robust_jax.trainers or main.py)")
    return REGISTRY[cfg.name]


def trainable_mask(cfg, model, variables, image_shape):
    """None (train every parameter) or the bool tree of parameters method `cfg.name` trains."""
    return _cls(cfg).trainable(cfg, model, variables, image_shape)


def init_params(cfg, model, variables, image_shape, num_classes: int, key) -> dict:
    """The trainable parameters method `cfg.name` owns besides the model's ({} for most; `Method.init_params`)."""
    return _cls(cfg).init_params(cfg, model, variables, image_shape, num_classes, key)


def get(cfg, model, num_classes: int, *, steps_per_epoch=None):
    """The adapter of method `cfg.name`. `steps_per_epoch`: the training run's, for objectives whose settings
    follow the epoch (the ARD/PRM schedule of `attack.keep_warmup_epochs`)."""
    method = _cls(cfg)(model, cfg, num_classes)
    method.steps_per_epoch = steps_per_epoch
    return method


def config_defaults() -> dict:
    """The `config.method` fields of every registered method with their declared defaults. A field that
    several methods read (`attack`, `beta`, the mixing fields) must be declared with one default."""
    merged = {}
    for name, cls in REGISTRY.items():
        for key, value in cls.CONFIG.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"method {name!r} declares config.method.{key}={value!r}, another method "
                                 f"{merged[key]!r}: shared fields need one default")
            merged[key] = value
    return merged
