"""VQGANs on disk: a converted variables file with its architecture name, or a VQGAN training workdir.

    model, variables = vqgan_io.load_trained("runs/vqgan_digits")        # a configs/vqgan_*.py workdir
    model, variables = vqgan_io.load_spec(checkpoint="vq_f8.msgpack", name="openimages_f8_16384")

A training workdir holds `vqgan.msgpack` (the variables, EMA if kept) and `vqgan_model.json` (the VQModel
fields), so the model is rebuilt from the workdir alone. DAT receives the (model, variables) these return.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings

import jax

from robust_jax.init_compile import jit_init
from robust_jax.models import variables_io, vqgan

VARIABLES_FILE, MODEL_FILE = "vqgan.msgpack", "vqgan_model.json"
RANDOM_INIT = "random-init"  # a `checkpoint` value for smoke tests: an untrained VQGAN


def model_fields(model: vqgan.VQModel) -> dict:
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}


def export(model: vqgan.VQModel, variables, workdir: str) -> None:
    """Writes the two files `load_trained` reads into `workdir`."""
    variables_io.save_variables(os.path.join(workdir, VARIABLES_FILE), variables)
    tmp = os.path.join(workdir, MODEL_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(model_fields(model), f, indent=2)
    os.replace(tmp, os.path.join(workdir, MODEL_FILE))


def load_trained(workdir: str):
    """(VQModel, variables) of a VQGAN training workdir (configs/vqgan_*.py)."""
    paths = [os.path.join(workdir, f) for f in (MODEL_FILE, VARIABLES_FILE)]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no {os.path.basename(path)} in {workdir!r}: train a VQGAN there first, e.g. "
                f"`python main.py --config configs/vqgan_digits.py --workdir {workdir}` (the file is written when "
                "training ends)")
    with open(paths[0]) as f:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()}
    model = vqgan.VQModel(**fields)
    return model, vqgan.load(paths[1], model)


def load_spec(checkpoint: str, name: str = "", kwargs=None):
    """(VQModel, variables) from a `checkpoint` that is a VQGAN training workdir, or a .msgpack file of
    architecture `name` (+ `kwargs`, fields of `vqgan.CONFIGS[name]` overridden), or `RANDOM_INIT`."""
    kwargs = dict(kwargs or {})
    if not checkpoint:
        raise ValueError(
            "no VQGAN given: set the checkpoint (method.vqgan.checkpoint) to a VQGAN training workdir (e.g. train "
            "one with `python main.py --config configs/vqgan_digits.py --workdir runs/vqgan_digits`) or to a "
            "converted .msgpack (robust-jax-convert --model vqgan:openimages_f8_16384 ...) together with its "
            "architecture name (method.vqgan.name)")
    if checkpoint == RANDOM_INIT:
        return random_init(name, kwargs)
    if os.path.isdir(checkpoint):
        return load_trained(checkpoint)
    if not name:
        raise ValueError(f"VQGAN checkpoint {checkpoint!r} is a variables file: give its architecture name "
                         f"(method.vqgan.name), one of {', '.join(sorted(vqgan.CONFIGS))}")
    model = vqgan.get(name, **kwargs)
    return model, vqgan.load(checkpoint, model)


def random_init(name: str, kwargs=None):
    """An UNTRAINED VQGAN of architecture `name`: only for smoke tests of the plumbing (its reconstructions
    are noise, so DAT with it is meaningless); says so in a warning."""
    if not name:
        raise ValueError(f"a {RANDOM_INIT!r} VQGAN needs its architecture name (method.vqgan.name)")
    model = vqgan.get(name, **dict(kwargs or {}))
    warnings.warn(f"an untrained, randomly initialised VQGAN ({name}) is in use: for smoke tests only",
                  stacklevel=2)
    return model, jit_init(model.init)(jax.random.key(0), vqgan.init_input(model))
