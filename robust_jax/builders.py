"""From a config to the objects a run needs: model, optimiser, initial state. Shared by training,
evaluation and notebooks so that all three build exactly the same thing."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from robust_jax import data, models, optim
from robust_jax import state as state_lib
from robust_jax.models import variables_io


def build_model(config, num_classes: int):
    m = config.model
    return models.get(m.name, num_classes=num_classes, mean=tuple(m.mean), std=tuple(m.std),
                      **dict(m.get("kwargs", {})))


def init_variables(model, config, key, image_shape):
    """Random initialisation, or the variables file `config.model.init_from` (strict)."""
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    init = lambda k: model.init(k, x, train=False)
    if config.model.get("init_from"):
        return variables_io.load_variables(config.model.init_from, jax.eval_shape(init, key))
    return jax.jit(init)(key)


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
    """Model, optimiser and the initial (replicated) TrainState of `config`."""
    source = data.source_for(config.data)
    image_shape = data.example_shape(config.data)
    num_classes = source.num_classes
    spe = data.steps_per_epoch(config.data, config.train.batch_size)
    total = config.train.get("num_steps") or int(round(config.train.epochs * spe))
    model = build_model(config, num_classes)
    variables = init_variables(model, config, jax.random.key(config.seed), image_shape)
    schedule = optim.make_schedule(config.optim, steps_per_epoch=spe, total_steps=total)
    tx = optim.make_optimizer(config.optim, schedule, variables["params"])
    state = state_lib.create(variables, tx, ema=bool(config.optim.get("ema_decay", 0.0)))
    from robust_jax import parallel

    return Run(model, tx, schedule, parallel.replicate(state, mesh), num_classes, image_shape, spe, total)
