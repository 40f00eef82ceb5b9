"""Frozen teacher classifiers on disk (MixACM's robust teacher): a training workdir of this project or a
variables file with its architecture.

    model, variables = teacher_io.load("runs/default", num_classes=10)                  # a training workdir
    model, variables = teacher_io.load("wrn.msgpack", num_classes=10, name="wrn34_10",
                                       kwargs=dict(mean=CIFAR10_MEAN, std=CIFAR10_STD))   # a converted file

A workdir gives its weights as its evaluation saw them (best checkpoint with `train.select_best`, else the
latest; EMA parameters when kept; `models.init_source.read_workdir`) and its architecture from the
`config.json` the run wrote (model name, kwargs, mean, std). A variables file needs `name` (a `models`
registry name) and `kwargs` (its fields, mean/std included). Loading is strict: every missing or unexpected
key and every shape mismatch against the architecture is reported. The teacher is built in float32 with
synchronised BatchNorm (it only runs in eval mode, on running statistics).
"""
from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp

from robust_jax import models
from robust_jax.init_compile import jit_init
from robust_jax.models import init_source, variables_io

RANDOM_INIT = "random-init"  # a `checkpoint` value for smoke tests: an untrained teacher of architecture `name`
CONFIG_FILE = "config.json"


def _no_teacher() -> ValueError:
    return ValueError(
        "no teacher given: set method.mixacm.teacher.checkpoint to a training workdir of this project (e.g. the "
        "PGD-AT run `python main.py --config configs/default.py --workdir runs/default`) or to a converted "
        ".msgpack file together with its architecture (method.mixacm.teacher.name, e.g. 'wrn34_10', and "
        "teacher.kwargs with its mean/std)")


def architecture(checkpoint: str, name: str = "", kwargs=None):
    """(registry name, model fields) of the teacher `checkpoint` names: from a workdir's config.json, else
    `name` and `kwargs` as given."""
    if not checkpoint:
        raise _no_teacher()
    if checkpoint != RANDOM_INIT and os.path.isdir(checkpoint):
        path = os.path.join(checkpoint, CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"teacher workdir {checkpoint!r} has no {CONFIG_FILE}: it is not a training "
                                    "workdir of this project (train the teacher there first)")
        with open(path) as f:
            m = json.load(f)["model"]
        fields = dict(m.get("kwargs") or {}, mean=tuple(m["mean"]), std=tuple(m["std"]))
        return m["name"], {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if not name:
        if checkpoint == RANDOM_INIT:
            raise ValueError(f"a {RANDOM_INIT!r} teacher needs its architecture name (method.mixacm.teacher.name)")
        raise ValueError(f"teacher {checkpoint!r} is not a training workdir: give its architecture "
                         f"(method.mixacm.teacher.name), one of {', '.join(sorted(models.REGISTRY))}, and its "
                         "fields (teacher.kwargs, mean/std included)")
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in dict(kwargs or {}).items()}


def build(checkpoint: str, num_classes: int, name: str = "", kwargs=None):
    """The teacher's Linen module (no weights read)."""
    arch, fields = architecture(checkpoint, name, kwargs)
    return models.get(arch, num_classes=num_classes, **fields)


def template(model, image_shape):
    """The abstract variables of `model` on images of `image_shape` (H, W, C)."""
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def check(model, variables, image_shape, *, what: str = "the teacher's variables") -> None:
    """Raises ValueError naming every missing/unexpected key and shape mismatch of `variables` against `model`
    on images of `image_shape`."""
    variables_io.check_same_structure(variables, template(model, image_shape),
                                      what=f"{what} ({type(model).__name__})")


def load(checkpoint: str, num_classes: int, name: str = "", kwargs=None, image_shape=None):
    """(model, variables) of the teacher: a training workdir, a variables file of architecture `name`, or
    `RANDOM_INIT` (an untrained `name`, for smoke tests of the plumbing only: it warns). With `image_shape`
    the variables are checked against the architecture now (else call `check` before use)."""
    model = build(checkpoint, num_classes, name, kwargs)
    if checkpoint == RANDOM_INIT:
        if image_shape is None:  # the convolutional classifiers' parameters do not depend on H, W
            image_shape = (32, 32, len(getattr(model, "mean", (0.0, 0.0, 0.0))))
        warnings.warn(f"an untrained, randomly initialised teacher ({name}) is in use: for smoke tests only",
                      stacklevel=2)
        x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
        return model, jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    variables = jax.tree.map(jnp.asarray, init_source.read(checkpoint))
    if image_shape is not None:
        check(model, variables, image_shape, what=f"teacher {checkpoint!r}")
    return model, variables
