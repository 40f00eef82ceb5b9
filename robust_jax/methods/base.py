"""What every training objective shares: applying the model in an explicit mode, and its attack.

A method is an object with `loss(params, model_state, batch, key, step) -> (loss, (model_state, metrics))`;
the generic train step differentiates it w.r.t. `params`. `model_state` holds the non-parameter
collections (`batch_stats`). Methods say explicitly in which mode (train: batch statistics; eval:
running statistics) the attack sees the model, as the references differ on this.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from robust_jax.attacks import pgd


@dataclasses.dataclass(frozen=True)
class Classifier:
    """`model.apply` with the mode explicit and the state threaded through."""

    model: nn.Module

    def __call__(self, params, model_state, x, *, train: bool, bn: str = "clean", rng=None, method=None, **kwargs):
        """Returns (logits, new_model_state); in eval mode the state comes back unchanged.
        `rng` feeds the 'dropout' stream (dropout, drop-path) of models that have one, in train mode.
        `method` (e.g. 'front'/'back' of staged models, with their `cut=`) and `kwargs` go to `model.apply`."""
        variables = {"params": params, **model_state}
        rngs = {"dropout": rng} if (train and rng is not None) else None
        kwargs = dict(kwargs, train=train, bn=bn, rngs=rngs, method=method)
        if train and model_state:
            logits, updates = self.model.apply(variables, x, mutable=list(model_state), **kwargs)
            return logits, {**model_state, **updates}
        return self.model.apply(variables, x, **kwargs), model_state

    def logits_fn(self, params, model_state, *, train: bool, bn: str = "clean") -> Callable:
        """x -> logits for attacks: parameters are constants (no gradient flows back into them through
        the attack loop) and state updates made in train mode are discarded."""
        params, model_state = jax.lax.stop_gradient((params, model_state))
        return lambda x: self(params, model_state, x, train=train, bn=bn)[0]


class Method:
    """Base of the objectives: holds the model (as a `Classifier`), the method config and the class count.

    `frozen`: variables the objective uses but never trains (DAT's VQGAN); None for most methods. When set,
    the train step passes them to `loss` as a last argument (see `state.make_train_step`).
    """

    frozen = None

    def __init__(self, model, cfg, num_classes: int):
        self.classifier = Classifier(model)
        self.cfg = cfg
        self.num_classes = num_classes

    def loss(self, params, model_state, batch, key, step):
        raise NotImplementedError

    @classmethod
    def trainable(cls, cfg, model, variables, image_shape):
        """Which parameters the optimiser updates: None (all), or a bool tree shaped like
        `variables['params']` (AdvBN: the head after the cut). The others get no update and no decay."""
        return None


def attack_settings(cfg: ml_collections.ConfigDict) -> Dict[str, Any]:
    """The `pgd` keyword arguments from an attack config (norm, eps, step_size, steps, loss, random_start)."""
    return dict(norm=cfg.norm, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps, loss=cfg.get("loss", "ce"),
                random_start=cfg.get("random_start", True))


def run_attack(classifier: Classifier, cfg, params, model_state, x, y, key, **overrides):
    """PGD as configured, on the model in the mode `cfg.train_mode` (True: batch statistics)."""
    logits_fn = classifier.logits_fn(params, model_state, train=cfg.train_mode)
    return pgd(logits_fn, x, y, key, **{**attack_settings(cfg), **overrides})


def accuracy(logits, labels):
    """Top-1 accuracy; soft labels are compared by their argmax."""
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, -1)
    return jnp.mean(jnp.argmax(logits, -1) == labels)
