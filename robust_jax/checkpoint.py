"""Orbax checkpoints of the TrainState in `workdir/checkpoints`, restored automatically on start (and, with
`train.select_best`, the best one so far in `workdir/best_checkpoint`: see `robust_jax.best_checkpoint`).

Storage faults are reported, not propagated as raw orbax/TensorStore tracebacks: a damaged latest checkpoint
(truncated array file or `_METADATA`) is named in one logged line and the newest intact one is used instead
(orbax keeps `train.keep_checkpoints`, 2 by default); only when none is intact, or when a checkpoint cannot be
written (full disk, read-only directory), a `CheckpointError` says in one paragraph what happened, where and
what to do. A checkpoint that is intact but holds another model or optimiser is still a mismatch (ValueError).
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robust_jax.models import variables_io

log = logging.getLogger(__name__)

TMP_MARKER = ".orbax-checkpoint-tmp"  # orbax writes a step into `<step>.orbax-checkpoint-tmp*`, then renames it
PROBE_NAME = ".write_probe"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read (every checkpoint damaged) or written (full disk, read-only
    location); the message is one paragraph naming the path and what to do."""


class _Damaged(Exception):
    """Internal: the checkpoint of one step cannot be read although its metadata matches (or is unreadable)."""


def free_space(path: str) -> str:
    """'N.N GB free' on the file system holding `path` (or its nearest existing parent), for error messages."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return f"{shutil.disk_usage(probe).free / 1e9:.1f} GB free"
    except OSError:
        return "free space unknown"


def first_line(error: BaseException) -> str:
    """The first line of the message of the exception at the root of `error` (orbax wraps TensorStore's, whose
    messages run to hundreds of lines), with its type."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def write_error(path: str, error: BaseException, doing: str) -> CheckpointError:
    """The one-paragraph error for a failed write of `path` while `doing` something."""
    hint = ("the disk is full: free space or point --workdir at a larger disk"
            if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)
            else "make the location writable (permissions, mount, quota) or choose another --workdir")
    return CheckpointError(
        f"could not write {path} while {doing} ({first_line(error)}; {free_space(path)} there): {hint}, then "
        "rerun the same command, which resumes from the last complete checkpoint.")


def _shapes(tree) -> dict:
    """{'params/conv/kernel': shape, ...} of a pytree of arrays or orbax array metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(getattr(x, "shape", np.shape(x)))
            for p, x in leaves}


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int = 2, name: str = "checkpoints"):
        self.directory = os.path.join(os.path.abspath(workdir), name)
        self._saving_step = None
        try:
            self.manager = ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
                item_handlers=ocp.StandardCheckpointHandler())  # registered up front: item_metadata needs it
        except OSError as e:
            raise write_error(self.directory, e, "creating the checkpoint directory") from e

    def latest_step(self):
        return self.manager.latest_step()

    # --- writing ------------------------------------------------------------------------------------------

    def prepare_to_save(self) -> None:
        """Before training: removes the temporary directories an interrupted save left (logged), then writes
        and deletes a tiny file so a read-only or full location fails now, not after hours of training."""
        if jax.process_index() != 0:
            return
        for tmp in sorted(glob.glob(os.path.join(self.directory, f"*{TMP_MARKER}*"))):
            log.warning("removing %s, an incomplete checkpoint left by an interrupted save", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        probe = os.path.join(self.directory, PROBE_NAME)
        try:
            _write_probe(probe)
        except OSError as e:
            raise write_error(self.directory, e, "checking that checkpoints can be saved before training") from e

    def save(self, state, *, force: bool = False) -> None:
        """Saves `state` at its step (asynchronously; a failure of an earlier save surfaces here too)."""
        step = int(state.step)
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
        except Exception as e:  # noqa: BLE001  (orbax/TensorStore raise many types for an I/O failure)
            raise self._save_failed(e, step) from e
        self._saving_step = step

    def wait(self) -> None:
        """Blocks until the pending save is on disk; a failure is a CheckpointError."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_failed(e, self._saving_step) from e

    def _save_failed(self, error: BaseException, step) -> CheckpointError:
        """The error for a failed save of `step`; the incomplete temporary directory is removed."""
        for tmp in glob.glob(os.path.join(self.directory, f"{step}{TMP_MARKER}*")):
            shutil.rmtree(tmp, ignore_errors=True)
        return write_error(os.path.join(self.directory, str(step)), error, f"saving the checkpoint of step {step}")

    # --- reading ------------------------------------------------------------------------------------------

    def _steps_newest_first(self, step=None) -> list:
        return [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)

    def _metadata(self, step):
        """The checkpoint's tree of array metadata; unreadable (truncated `_METADATA`...) means damaged."""
        try:
            return self.manager.item_metadata(step).tree
        except Exception as e:  # noqa: BLE001
            raise _Damaged(f"its metadata cannot be read ({first_line(e)})") from e

    def _newest_intact(self, read, step=None):
        """`read(step)` for the newest step whose checkpoint is intact (or only `step` when given); damaged
        ones are logged and skipped. Returns (value, step); raises CheckpointError when none is intact."""
        steps = self._steps_newest_first(step)
        problems = []
        for i, s in enumerate(steps):
            try:
                return read(s), s
            except _Damaged as e:
                problems.append(f"{s}: {e}")
                log.warning("checkpoint %s/%s is damaged (%s); %s", self.directory, s, e,
                            "trying the previous one" if i + 1 < len(steps) else "no older one is left")
        raise CheckpointError(
            f"no intact checkpoint in {self.directory} (damaged: {'; '.join(problems)}). The files were cut "
            "short or corrupted (a full disk, a copy that did not finish, a failing disk): restore the directory "
            "from a backup, or move it away (or use a new --workdir) to start training afresh.")

    def _restore_matching(self, step, template):
        """The state of `step` with `template`'s structure; a structure/shape difference is a mismatch
        (ValueError), a read failure with matching metadata means the files are damaged."""
        saved = _shapes(self._metadata(step))
        wanted = _shapes(template)
        if saved != wanted:
            missing = sorted(set(wanted) - set(saved))[:3]
            unexpected = sorted(set(saved) - set(wanted))[:3]
            shapes = [f"{k} {saved[k]} vs {wanted[k]}" for k in sorted(set(saved) & set(wanted))
                      if saved[k] != wanted[k]][:3]
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match the configured model/optimizer (was the "
                f"workdir used with another config?): missing {missing}, unexpected {unexpected}, shapes "
                f"{shapes}. Use the config the workdir was trained with (its config.json), or a new --workdir.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001
            raise _Damaged(f"its arrays cannot be read ({first_line(e)})") from e

    def restore(self, template, step=None):
        """The state saved at `step` (default: the newest intact one) with `template`'s structure, shapes and
        shardings."""
        return self._newest_intact(lambda s: self._restore_matching(s, template), step)[0]

    def restore_raw(self, step=None) -> dict:
        """The saved state at `step` (default: the newest intact one) as nested dicts of arrays, without a
        template: shapes and dtypes from the checkpoint's metadata, every array replicated over this run's
        devices (whatever mesh or process count saved it, so another run, e.g. a fine-tuning's
        `model.init_from`, can read it)."""
        devices = np.array(jax.devices())
        replicated = NamedSharding(Mesh(devices, ("all",)), PartitionSpec())

        def read(s):
            abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
                                    self._metadata(s))
            try:
                return self.manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # noqa: BLE001
                raise _Damaged(f"its arrays cannot be read ({first_line(e)})") from e

        return self._newest_intact(read, step)[0]

    def restore_weights(self, template):
        """The newest intact state's step, params, model_state and EMA (not the optimiser state), so evaluation
        works whatever optimiser the workdir was trained with. Strict: every key and shape must match
        `template`'s, and mismatches are reported by name. Returns `template` with those replaced."""
        raw = self.restore_raw()
        step = int(raw["step"])
        parts = {}
        for name in ("params", "model_state", "ema_params"):
            want = getattr(template, name)
            got = raw.get(name) or type(want)()
            variables_io.check_same_structure(got, want, what=f"checkpoint {self.directory}/{step} ({name})")
            parts[name] = jax.tree.map(lambda v, t: jax.device_put(v, t.sharding), got, want)
        return template.replace(step=jax.numpy.asarray(raw["step"]), **parts)

    def restore_or(self, template):
        """Newest intact saved state, or `template` when there is none (a fresh run). Damaged checkpoints newer
        than the restored one are moved aside to `damaged-<step>` (logged): training saves those steps again."""
        if self.latest_step() is None:
            return template
        state, step = self._newest_intact(lambda s: self._restore_matching(s, template))
        newer = [s for s in self.manager.all_steps() if s > step]
        if newer and jax.process_index() == 0:
            for s in newer:
                target = _unused(os.path.join(self.directory, f"damaged-{s}"))
                os.replace(os.path.join(self.directory, str(s)), target)
                log.warning("moved the damaged checkpoint %s/%s to %s; resuming from step %s",
                            self.directory, s, target, step)
        if newer:
            if jax.process_count() > 1:  # every process sees the moved directories before listing steps again
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("robust_jax.checkpoint.moved_damaged")
            self.manager.reload()
        return state

    def close(self) -> None:
        self.wait()
        self.manager.close()


def _write_probe(path: str) -> None:
    """Writes, syncs and deletes a small file at `path` (raises OSError where the disk refuses)."""
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    os.remove(path)


def _unused(path: str) -> str:
    """`path`, or `path-1`, `path-2`, ... if it exists."""
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate
