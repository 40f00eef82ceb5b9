"""Which trainer runs a config, chosen in this one place: classifiers (`robust_jax.train` /
`robust_jax.evaluate`) unless `method.name` names another kind of model to train (`TRAINERS`).

    from robust_jax import trainers
    report = trainers.train_and_evaluate(config, workdir)   # what `main.py --mode train` runs
    report = trainers.evaluate(config, workdir)             # what `main.py --mode eval` runs
"""
from __future__ import annotations

import importlib

# method.name -> "module:function" per mode; every other method.name trains a classifier. Imported on use, so
# a run loads only its own trainer.
CLASSIFIER = {"train": "robust_jax.train:train_and_evaluate", "eval": "robust_jax.evaluate:evaluate"}
TRAINERS = {"vqgan": {"train": "robust_jax.vqgan_training.run:train_vqgan",
                      "eval": "robust_jax.vqgan_training.run:evaluate_vqgan"}}


def _entry(config, mode: str):
    module, function = TRAINERS.get(config.method.name, CLASSIFIER)[mode].split(":")
    return getattr(importlib.import_module(module), function)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming if possible); returns the final report."""
    return _entry(config, "train")(config, workdir)


def evaluate(config, workdir: str) -> dict:
    """Evaluates the trained state of `workdir` as `config` says; returns the report."""
    return _entry(config, "eval")(config, workdir)
