"""From a config to the objects a run needs: model, optimiser, initial state. Shared by training,
evaluation and notebooks so that all three build exactly the same thing."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from robust_jax import data, methods, models, optim, parallel
from robust_jax import state as state_lib
from robust_jax.init_compile import jit_init
from robust_jax.models import init_source

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def bn_group_size(spec: str):
    """`config.model.bn` -> the models' `bn_group_size`: 'sync' -> None (statistics over the global batch,
    what `jit` over the mesh computes), 'ghost:N' -> N (statistics per group of N examples)."""
    if spec == "sync":
        return None
    kind, _, n = str(spec).partition(":")
    if kind == "ghost" and n.isdigit() and int(n) > 0:
        return int(n)
    raise ValueError(f"config.model.bn must be 'sync' or 'ghost:N' with N a positive integer (the per-device "
                     f"batch of the reference to reproduce), got {spec!r}")


def compute_dtype(name: str):
    """`config.model.dtype` -> the models' compute dtype (parameters and BN statistics stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def build_model(config, num_classes: int):
    """The configured model; `model.bn` and `model.dtype` become its `bn_group_size` and `dtype` fields."""
    m = config.model
    kwargs = dict(m.kwargs)
    for key, field in (("bn_group_size", "model.bn='ghost:N'"), ("dtype", "model.dtype")):
        if key in kwargs:
            raise ValueError(f"config.model.kwargs.{key} is not allowed: set config.{field} instead")
    group, dtype = bn_group_size(m.bn), compute_dtype(m.dtype)
    # Only non-defaults are passed, so models without BatchNorm or dtype fields (e.g. the ViTs) build too.
    if group is not None:
        kwargs["bn_group_size"] = group
    if dtype != jnp.float32:
        kwargs["dtype"] = dtype
    try:
        return models.get(m.name, num_classes=num_classes, mean=tuple(m.mean), std=tuple(m.std), **kwargs)
    except TypeError as e:
        if "bn_group_size" in str(e) or "dtype" in str(e):
            raise ValueError(f"model {m.name!r} does not support model.bn={m.bn!r} / "
                             f"model.dtype={m.dtype!r}: {e}") from e
        raise


def check_bn_groups(config) -> None:
    """Ghost groups must tile the per-step global batch (`train.batch_size`)."""
    group, batch = bn_group_size(config.model.bn), config.train.batch_size
    if group is not None and batch % group:
        raise ValueError(f"config.model.bn={config.model.bn!r}: the group size {group} must divide the global "
                         f"batch train.batch_size={batch}")


def init_variables(model, config, key, image_shape):
    """Random initialisation, or `config.model.init_from` (a variables file or a training workdir; strict,
    single BN expanded to dual BN: `models.init_source`)."""
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    init = lambda k: model.init(k, x, train=False)
    if config.model.init_from:
        return init_source.load(config.model.init_from, jax.eval_shape(init, key))
    return jit_init(init)(key)


@dataclasses.dataclass
class Run:
    model: object
    tx: optax.GradientTransformation
    schedule: object
    state: state_lib.TrainState
    num_classes: int
    image_shape: tuple
    steps_per_epoch: int
    total_steps: int


def build_run(config, mesh) -> Run:
    """Model, optimiser and the initial TrainState of `config`, placed as `parallel.state_sharding` says."""
    check_bn_groups(config)
    source = data.source_for(config.data)
    image_shape = data.example_shape(config.data)
    num_classes = source.num_classes
    spe = data.steps_per_epoch(config.data, config.train.batch_size)
    total = config.train.num_steps or int(round(config.train.epochs * spe))
    model = build_model(config, num_classes)
    variables = init_variables(model, config, jax.random.key(config.seed), image_shape)
    own = methods.init_params(config.method, model, variables, image_shape, num_classes,
                              jax.random.fold_in(jax.random.key(config.seed), 1))
    if own:  # a method's own trainable parameters (MixACM's projections), beside the model's
        variables = {**variables, "params": {**variables["params"], state_lib.METHOD_PARAMS: own}}
    schedule = optim.make_schedule(config.optim, steps_per_epoch=spe, total_steps=total)
    trainable = methods.trainable_mask(config.method, model, variables, image_shape)
    tx = optim.make_optimizer(config.optim, schedule, variables["params"], trainable=trainable)
    state = state_lib.create(variables, tx, ema=bool(config.optim.ema_decay))
    return Run(model, tx, schedule, parallel.shard_state(state, mesh), num_classes, image_shape, spe, total)
