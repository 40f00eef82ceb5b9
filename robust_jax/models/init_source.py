"""`config.model.init_from`: the variables a run starts from — a variables file or another run's workdir.

* a `.msgpack` variables file (robust-jax-convert output, `variables_io.save_variables`);
* a training workdir: the weights its evaluation reported — the best checkpoint when it ran with
  `train.select_best`, else the latest — (EMA parameters when that run kept them), whatever optimiser it used,
  without the parameters its method kept for itself (`state.METHOD_PARAMS`).

Loading is strict. The one conversion done, and logged, is single BN -> dual BN: when the model is built with
`dual_bn=True` and the source has one BatchNorm set, each BN is copied into both sets (`models.dual_bn`).
"""
from __future__ import annotations

import logging
import os

import flax.serialization
import jax
import numpy as np

from robust_jax.models import dual_bn, variables_io
from robust_jax.state import METHOD_PARAMS

log = logging.getLogger(__name__)


def read_workdir(workdir: str) -> dict:
    """{'params': ..., <model_state collections>} of `workdir`'s best or latest checkpoint (EMA params if kept)."""
    from robust_jax.best_checkpoint import weights_checkpoints

    ckpts = weights_checkpoints(workdir)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise FileNotFoundError(f"model.init_from={workdir!r} is a directory without checkpoints: train that "
                                    "run first, or point init_from at a variables file")
        raw = ckpts.restore_raw(step)
    finally:
        ckpts.close()
    params = raw.get("ema_params") or raw["params"]
    params = {k: v for k, v in params.items() if k != METHOD_PARAMS}  # a method's own parameters (MixACM's)
    log.info("init_from %s: step %d, %s parameters", workdir, step, "EMA" if raw.get("ema_params") else "live")
    return jax.tree.map(np.asarray, {"params": params, **(raw.get("model_state") or {})})


def read(path: str) -> dict:
    if os.path.isdir(path):
        return read_workdir(path)
    return variables_io.read_variables(path)


def load(path: str, template):
    """The variables at `path` with `template`'s structure (see the module docstring)."""
    source = read(path)
    want = flax.serialization.to_state_dict(template)
    what = f"model.init_from={path!r}"
    if dual_bn.is_dual(want) and not dual_bn.is_dual(source):
        log.info("%s has one BatchNorm set: copying it into the clean and adv sets", what)
        source = dual_bn.to_dual_bn(source, want, what=what)
    variables_io.check_same_structure(source, want, what=what)
    return flax.serialization.from_state_dict(template, source)
