"""Which trainer runs a config, chosen in this one place: classifiers (`robust_jax.train` /
`robust_jax.evaluate`) unless `method.name` names another kind of model to train (`TRAINERS`).

    from robust_jax import trainers
    report = trainers.train_and_evaluate(config, workdir)   # what `main.py --mode train` runs
    report = trainers.evaluate(config, workdir)             # what `main.py --mode eval` runs
    run, objective = trainers.build(config, mesh)           # what a train run starts from

Both validate the config (`config_checks.validate`) before importing the trainer, so a bad value fails in
seconds and before any workdir exists; the trainers check again with the device count.
"""
from __future__ import annotations

import importlib

# method.name -> "module:function" per mode; every other method.name trains a classifier. Imported on use, so
# a run loads only its own trainer.
CLASSIFIER = {"train": "robust_jax.train:train_and_evaluate", "eval": "robust_jax.evaluate:evaluate",
              "build": "robust_jax.train:build"}
TRAINERS = {"vqgan": {"train": "robust_jax.vqgan_training.run:train_vqgan",
                      "eval": "robust_jax.vqgan_training.run:evaluate_vqgan",
                      "build": "robust_jax.vqgan_training.run:build"}}


def _entry(config, mode: str):
    module, function = TRAINERS.get(config.method.name, CLASSIFIER)[mode].split(":")
    return getattr(importlib.import_module(module), function)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
    """Trains `config` in `workdir` (resuming if possible); returns the final report. Resuming a workdir trained
    with another config is refused unless `allow_config_change` (`robust_jax.run_config`)."""
    from robust_jax import config_checks

    config_checks.validate(config, "train")
    return _entry(config, "train")(config, workdir, allow_config_change=allow_config_change)


def evaluate(config, workdir: str) -> dict:
    """Evaluates the trained state of `workdir` as `config` says; returns the report."""
    from robust_jax import config_checks

    config_checks.validate(config, "eval")
    return _entry(config, "eval")(config, workdir)


def build(config, mesh):
    """(run, objective): what a train run of `config` starts from, before any checkpoint is restored. `run` is a
    `builders.Run` (model, optimiser, schedule, initial state placed on `mesh`, lengths); `objective` owns the
    `loss` and `frozen` that `state.make_train_step` takes (the method, or the VQGAN objective). For tools that
    trace, time or inspect one train step of any recipe."""
    return _entry(config, "build")(config, mesh)
