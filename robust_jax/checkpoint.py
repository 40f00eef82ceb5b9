"""Orbax checkpoints of the TrainState in `workdir/checkpoints`, restored automatically on start (and, with
`train.select_best`, the best one so far in `workdir/best_checkpoint`: see `robust_jax.best_checkpoint`)."""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robust_jax.models import variables_io


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int = 2, name: str = "checkpoints"):
        self.directory = os.path.join(os.path.abspath(workdir), name)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers=ocp.StandardCheckpointHandler())  # registered up front: item_metadata needs it

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, state, *, force: bool = False) -> None:
        self.manager.save(int(state.step), args=ocp.args.StandardSave(state), force=force)

    def restore(self, template, step=None):
        """The state saved at `step` (default latest) with `template`'s structure, shapes and shardings."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match the configured model/optimizer "
                f"(was the workdir used with another config?): {e}") from e

    def restore_raw(self, step=None) -> dict:
        """The saved state at `step` (default latest) as nested dicts of arrays, without a template: shapes and
        dtypes from the checkpoint's metadata, every array replicated over this run's devices (whatever mesh
        or process count saved it, so another run, e.g. a fine-tuning's `model.init_from`, can read it)."""
        step = self.latest_step() if step is None else step
        meta = self.manager.item_metadata(step)
        devices = np.array(jax.devices())
        replicated = NamedSharding(Mesh(devices, ("all",)), PartitionSpec())
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
                                meta.tree)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_weights(self, template):
        """The latest state's step, params, model_state and EMA (not the optimiser state), so evaluation
        works whatever optimiser the workdir was trained with. Strict: every key and shape must match
        `template`'s, and mismatches are reported by name. Returns `template` with those replaced."""
        step = self.latest_step()
        raw = self.restore_raw(step)
        parts = {}
        for name in ("params", "model_state", "ema_params"):
            want = getattr(template, name)
            got = raw.get(name) or type(want)()
            variables_io.check_same_structure(got, want, what=f"checkpoint {self.directory}/{step} ({name})")
            parts[name] = jax.tree.map(lambda v, t: jax.device_put(v, t.sharding), got, want)
        return template.replace(step=jax.numpy.asarray(raw["step"]), **parts)

    def restore_or(self, template):
        """Latest saved state, or `template` when there is none (a fresh run)."""
        return template if self.latest_step() is None else self.restore(template)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
