"""Optimisers and learning-rate schedules from `config.optim`, defined per step.

SGD follows PyTorch's semantics (weight decay added to the gradient before momentum, dampening 0,
optional Nesterov), so recipes ported from PyTorch keep their hyperparameters.
"""
from __future__ import annotations

import jax
import optax

SCHEDULES = ("constant", "piecewise", "cosine")


def make_schedule(cfg, *, steps_per_epoch: int, total_steps: int):
    """'constant'; 'piecewise' (lr * decay_factor^k after each of `decay_epochs`); 'cosine' to `min_lr`.
    `warmup_epochs` prepends a linear warm-up from `warmup_init_lr` (default 0) to `lr`. Steps, not epochs:
    timm's epoch-wise schedulers (DeiT) change the lr once per epoch; this one changes it every step."""
    kind, lr = cfg.schedule, cfg.lr
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "piecewise":
        boundaries = {int(round(e * steps_per_epoch)) - warmup: cfg.decay_factor for e in cfg.decay_epochs}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif kind == "cosine":
        min_lr = cfg.min_lr
        if not 0.0 <= min_lr <= lr:
            raise ValueError(f"optim.min_lr must lie in [0, optim.lr={lr}], got {min_lr}")
        main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup), alpha=min_lr / lr if lr else 0.0)
    else:
        raise ValueError(f"unknown schedule {kind!r}; known: {SCHEDULES}")
    if not warmup:
        return main
    start = cfg.warmup_init_lr
    return optax.join_schedules([optax.linear_schedule(start, lr, warmup), main], [warmup])


def _decay_mask(params, which: str):
    if which == "all":
        return jax.tree.map(lambda _: True, params)
    if which == "kernels":
        # Leaves named 'kernel' (conv/dense weights) only: no biases, no norm scales, and no ViT position
        # embeddings or class token (timm's filter: 1-D parameters and `no_weight_decay()` names).
        return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
    raise ValueError(f"optim.weight_decay_on must be 'all' or 'kernels', got {which!r}")


def make_optimizer(cfg, schedule, params, trainable=None) -> optax.GradientTransformation:
    """SGD (momentum, nesterov) or AdamW, with optional global-norm gradient clipping. `trainable`: None, or
    a bool tree like `params`; parameters marked False get a zero update (no decay, no optimiser state)."""
    tx = _optimizer(cfg, schedule, params)
    if trainable is None:
        return tx
    if not any(jax.tree.leaves(trainable)):
        raise ValueError("the method marks no parameter as trainable")
    labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _optimizer(cfg, schedule, params) -> optax.GradientTransformation:
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    which = cfg.weight_decay_on
    _decay_mask(params, which)  # validates `which` now, not at the first update
    # A callable mask is evaluated on the parameters optax sees (inside `make_optimizer`'s multi_transform,
    # frozen leaves are masked out of the tree).
    mask = lambda p: _decay_mask(p, which)  # noqa: E731
    if cfg.name == "sgd":
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask))
        parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adamw":
        parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2,
                                 weight_decay=cfg.weight_decay, mask=mask))
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; known: sgd, adamw")
    return optax.chain(*parts)
