"""What every training objective shares: applying a model in an explicit mode, the PGD attack settings,
and the config adapter that turns a method's config block into the keyword settings of its loss.

A method is a pure loss function

    xxx_loss(apply_fn, params, model_state, batch, key, *, <settings>) -> (loss, (model_state, metrics))

with `apply_fn` = a Linen `model.apply` (any classifier called as `apply(variables, x, train=...)`), so it
drops into any JAX training loop. `model_state` holds the non-parameter collections (`batch_stats`).
Methods say explicitly in which mode (train: batch statistics; eval: running statistics) the attack sees
the model, as the references differ on this. Each method module also declares `CONFIG`, the defaults of
its block of `config.method` (composed by `configs/common.base()`), and a `Method` subclass that builds
the settings from that block for the generic train step (`state.make_train_step`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Union

import jax
import jax.numpy as jnp

from robust_jax import attacks


@dataclasses.dataclass(frozen=True)
class Classifier:
    """`apply_fn` with the mode explicit and the state threaded through."""

    apply_fn: Callable

    def __call__(self, params, model_state, x, *, train: bool, rng=None, **kwargs):
        """Returns (logits, new_model_state); in eval mode the state comes back unchanged.
        `rng` feeds the 'dropout' stream (dropout, drop-path) of models that have one, in train mode.
        `kwargs` go to `apply_fn` as they are: model hooks (`bn=` of dual-BN models, `method=`/`cut=` of
        staged models) are passed only by the methods that need them."""
        variables = {"params": params, **model_state}
        if train and rng is not None:
            kwargs["rngs"] = {"dropout": rng}
        if train and model_state:
            logits, updates = self.apply_fn(variables, x, train=True, mutable=list(model_state), **kwargs)
            return logits, {**model_state, **updates}
        return self.apply_fn(variables, x, train=train, **kwargs), model_state

    def logits_fn(self, params, model_state, *, train: bool, **kwargs) -> Callable:
        """x -> logits for attacks: parameters are constants (no gradient flows back into them through
        the attack loop) and state updates made in train mode are discarded."""
        params, model_state = jax.lax.stop_gradient((params, model_state))
        return lambda x: self(params, model_state, x, train=train, **kwargs)[0]


@dataclasses.dataclass(frozen=True)
class PGDAttack:
    """The PGD attack a method trains against: `attacks.pgd` settings plus the model mode it sees.
    random_start: 'uniform' (in the eps-ball), 'normal' (x + 0.001 N(0,I), the TRADES/MART references) or
    'none'; train_mode: the model runs with batch statistics (True) or running statistics (False)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    loss: Union[str, Callable] = "ce"
    random_start: Union[bool, str] = "uniform"
    train_mode: bool = False

    def run(self, classifier: Classifier, params, model_state, x, y, key, *, loss=None):
        """x_adv for `classifier` at (params, model_state), without gradient to them; `loss` overrides."""
        logits_fn = classifier.logits_fn(params, model_state, train=self.train_mode)
        return attacks.pgd(logits_fn, x, y, key, norm=self.norm, eps=self.eps, step_size=self.step_size,
                           steps=self.steps, loss=self.loss if loss is None else loss,
                           random_start=self.random_start)


ATTACK_CONFIG = {f.name: f.default for f in dataclasses.fields(PGDAttack)}


def block_values(cfg, defaults: Dict[str, Any]) -> Dict[str, Any]:
    """The values of the keys of `defaults` in config block `cfg`, as plain Python values; keys `cfg` lacks
    keep their declared default (a block built by hand may set only some); nested dicts recurse."""
    out = {}
    for k, default in defaults.items():
        if k not in cfg:
            out[k] = default
        elif isinstance(default, dict) and default:
            out[k] = block_values(cfg[k], default)
        else:
            v = cfg[k]
            out[k] = v.to_dict() if hasattr(v, "to_dict") else v
    return out


def attack_from_config(cfg) -> PGDAttack:
    """`config.method.attack` -> PGDAttack."""
    return PGDAttack(**block_values(cfg, ATTACK_CONFIG))


class Method:
    """Config adapter of an objective: translates the method's block of `config.method` into the keyword
    settings of its pure loss (`settings`) and calls that loss (`loss_fn`) in the generic train step.

    `CONFIG`: the defaults of the fields this method reads from `config.method` (shared fields such as
    `attack` or `beta` are declared with the same default by every method that reads them).
    `frozen`: variables the objective uses but never trains (DAT's VQGAN); None for most methods. When set,
    the train step passes them to `loss` as a last argument (see `state.make_train_step`).
    """

    CONFIG: Dict[str, Any] = {}
    loss_fn: Optional[Callable] = None
    frozen = None

    def __init__(self, model, cfg, num_classes: int):
        self.model = model
        self.classifier = Classifier(model.apply)
        self.cfg = cfg
        self.num_classes = num_classes
        self.settings = self.settings_from_config(cfg, num_classes)

    @classmethod
    def settings_from_config(cls, cfg, num_classes: int) -> Dict[str, Any]:
        """The keyword settings of `loss_fn` that config block `cfg` gives."""
        return {}

    def loss(self, params, model_state, batch, key, step):
        return type(self).loss_fn(self.model.apply, params, model_state, batch, key, **self.settings)

    @classmethod
    def trainable(cls, cfg, model, variables, image_shape) -> Optional[Any]:
        """Which parameters the optimiser updates: None (all), or a bool tree shaped like
        `variables['params']` (AdvBN: the head after the cut). The others get no update and no decay."""
        return None


def accuracy(logits, labels):
    """Top-1 accuracy; soft labels are compared by their argmax."""
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, -1)
    return jnp.mean(jnp.argmax(logits, -1) == labels)
