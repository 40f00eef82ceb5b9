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
        staged models, `attn_grad_keep=` of ViTs for ARD) are passed only by the methods that need them."""
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


# fold_in data of the training forwards' dropout keys: far from the small integers the attacks fold into `key`
# (their per-step keys, AMP's second endpoint), so the two streams never share a key.
_TRAINING_STREAM = 0x5EED0000


def training_rng(key, forward: int = 0):
    """The dropout / drop-path key of a loss's `forward`-th training forward pass, drawn from the loss's `key`
    independently of the attack's keys (models without dropout ignore it)."""
    return jax.random.fold_in(key, _TRAINING_STREAM + forward)


# fold_in data of the batch-mixing key of an attacked loss (PGD-AT's mixup / cutmix): the attack keeps `key`
# itself, so a run without mixing draws exactly what it drew before mixing existed.
_MIXING_STREAM = 0x313C0000


def mixing_rng(key):
    """The key that mixes an attacked loss's batch, independent of the attack's and the forwards' keys."""
    return jax.random.fold_in(key, _MIXING_STREAM)


@dataclasses.dataclass(frozen=True)
class PGDAttack:
    """The PGD attack a method trains against: `attacks.pgd` settings plus the model mode it sees.
    random_start: 'uniform' (in the eps-ball), 'normal' (x + 0.001 N(0,I), the TRADES/MART references) or
    'none'; train_mode: the model runs with batch statistics (True) or running statistics (False).

    ViT recipes (Mo et al. 2022, `attacks.ard_prm`; off by default, and then the attack is plain `pgd`):
    ard: attention random drop, through the model's `attn_grad_keep` hook; prm: perturbation random masking
    on a grid of `prm_patch` pixels (0 = the model's `patch_size`); both at the keep probability
    p(t) = min(t / keep_warmup_epochs, 1) * keep_max, t the fractional training epoch (`run(epoch=)`).
    `ard_blocks` (not a config field): how many attention blocks ARD switches, the model's
    `num_attention_blocks`; `for_model` fills it, and `prm_patch` = 0, from the model."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    loss: Union[str, Callable] = "ce"
    random_start: Union[bool, str] = "uniform"
    train_mode: bool = False
    ard: bool = False
    prm: bool = False
    prm_patch: int = 0
    keep_max: float = 1.0
    keep_warmup_epochs: float = 0.0
    ard_blocks: int = dataclasses.field(default=0, metadata={"config": False})

    @property
    def randomised(self) -> bool:
        """Whether ARD or PRM is on (the attack is then `attacks.ard_prm_pgd`, else plain `attacks.pgd`)."""
        return bool(self.ard or self.prm)

    def keep(self, epoch=None):
        """ARD/PRM's keep probability at fractional training epoch `epoch` (None: after the warm-up)."""
        return attacks.keep_probability(epoch, keep_max=self.keep_max, warmup_epochs=self.keep_warmup_epochs)

    def for_model(self, model) -> "PGDAttack":
        """This attack with what ARD/PRM read from the model filled in: `ard_blocks` from
        `model.num_attention_blocks`, `prm_patch` (when 0) from `model.patch_size`. Unchanged when both are off."""
        changes = {}
        if self.ard and not self.ard_blocks:
            if not hasattr(model, "num_attention_blocks"):
                raise ValueError(f"attack.ard needs a model with the `attn_grad_keep` hook and a "
                                 f"`num_attention_blocks` property (ViT/DeiT, Swin); {type(model).__name__} has none")
            changes["ard_blocks"] = int(model.num_attention_blocks)
        if self.prm and not self.prm_patch:
            if not hasattr(model, "patch_size"):
                raise ValueError(f"attack.prm with prm_patch=0 takes the model's `patch_size`; "
                                 f"{type(model).__name__} has none: set attack.prm_patch")
            changes["prm_patch"] = int(model.patch_size)
        return dataclasses.replace(self, **changes) if changes else self

    def run(self, classifier: Classifier, params, model_state, x, y, key, *, loss=None, epoch=None):
        """x_adv for `classifier` at (params, model_state), without gradient to them; `loss` overrides.
        `epoch`: the fractional training epoch, which sets ARD/PRM's keep probability (`keep`)."""
        kwargs = dict(norm=self.norm, eps=self.eps, step_size=self.step_size, steps=self.steps,
                      loss=self.loss if loss is None else loss, random_start=self.random_start)
        if not self.randomised:
            logits_fn = classifier.logits_fn(params, model_state, train=self.train_mode)
            return attacks.pgd(logits_fn, x, y, key, **kwargs)
        if self.ard and not self.ard_blocks:
            raise ValueError("attack.ard needs ard_blocks (the model's num_attention_blocks): build the attack "
                             "with PGDAttack(..., ard_blocks=n) or attack.for_model(model)")
        if self.prm and not self.prm_patch:
            raise ValueError("attack.prm needs prm_patch (the model's patch size): set it, or use "
                             "attack.for_model(model)")

        def hooked(**hooks):
            return classifier.logits_fn(params, model_state, train=self.train_mode, **hooks)
        return attacks.ard_prm_pgd(hooked, x, y, key, keep=self.keep(epoch),
                                   ard_blocks=self.ard_blocks if self.ard else 0,
                                   prm_patch=self.prm_patch if self.prm else 0, **kwargs)


ATTACK_CONFIG = {f.name: f.default for f in dataclasses.fields(PGDAttack) if f.metadata.get("config", True)}


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
    `attack_schedule`: True for objectives whose `attack` may use ARD/PRM (PGD-AT, TRADES, MART): their loss
    takes `epoch=` (the fractional epoch step / steps_per_epoch, which drives the ARD/PRM schedule), and the
    attack's model-dependent fields are filled from the model (`PGDAttack.for_model`).
    `steps_per_epoch`: the training run's, set by `methods.get(..., steps_per_epoch=)`; None outside a run.
    """

    CONFIG: Dict[str, Any] = {}
    loss_fn: Optional[Callable] = None
    frozen = None
    attack_schedule: bool = False
    steps_per_epoch: Optional[int] = None

    def __init__(self, model, cfg, num_classes: int):
        self.model = model
        self.classifier = Classifier(model.apply)
        self.cfg = cfg
        self.num_classes = num_classes
        self.settings = self.settings_from_config(cfg, num_classes)
        attack_cfg = cfg["attack"] if "attack" in cfg else {}
        if any(bool(attack_cfg[k]) for k in ("ard", "prm") if k in attack_cfg) and not self.attack_schedule:
            raise ValueError(f"{type(self).__name__}: attack.ard / attack.prm are options of the pgd_at, trades "
                             "and mart objectives only")
        attack = self.settings.get("attack")
        if isinstance(attack, PGDAttack) and attack.randomised:
            self.settings["attack"] = attack.for_model(model)

    def epoch(self, step):
        """The fractional training epoch at `step` (updates done so far), or None without steps_per_epoch.
        Raises if the attack's ARD/PRM schedule needs it and steps_per_epoch is unknown."""
        if self.steps_per_epoch:
            return step / self.steps_per_epoch
        attack = self.settings.get("attack")
        if isinstance(attack, PGDAttack) and attack.randomised and attack.keep_warmup_epochs > 0:
            raise ValueError("attack.keep_warmup_epochs > 0 needs the run's steps per epoch: build the method "
                             "with methods.get(cfg, model, num_classes, steps_per_epoch=n)")
        return None

    @classmethod
    def settings_from_config(cls, cfg, num_classes: int) -> Dict[str, Any]:
        """The keyword settings of `loss_fn` that config block `cfg` gives."""
        return {}

    def loss(self, params, model_state, batch, key, step):
        extra = {"epoch": self.epoch(step)} if self.attack_schedule else {}
        return type(self).loss_fn(self.model.apply, params, model_state, batch, key, **self.settings, **extra)

    @classmethod
    def init_params(cls, cfg, model, variables, image_shape, num_classes: int, key) -> Dict[str, Any]:
        """Trainable parameters the objective owns besides the model's (MixACM's feature projections), {} for
        most methods. The run keeps them in `params[state.METHOD_PARAMS]`: the optimiser trains them with the
        model, evaluation and exported variables leave them out (`TrainState.eval_variables`)."""
        return {}

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
