"""Metrics to `workdir/metrics.jsonl` (one JSON object per logged step) and TensorBoard event files.
Only process 0 writes.

A resumed run starts from its restored checkpoint, so whatever an interrupted run logged after that step is
logged again: the writer drops those lines from metrics.jsonl when it opens it, and opens TensorBoard with
`purge_step` so its plots drop the stale tail too. No step is ever in the file twice.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax
import numpy as np

from robust_jax import import_guard

AFTER_TRAINING = ("final/", "eval/")  # prefixes of what a run logs at its last step after the loop


class MetricsWriter:
    def __init__(self, workdir: str, *, resume_step: int = 0, final_step: Optional[int] = None):
        """`resume_step`: the step the run restarts from (lines logged after it are dropped); `final_step`:
        the run's last step — a finished run that is run again evaluates again, so its after-training lines
        (`final/...`, and `eval/...` at the last step, which the periodic evaluation never logs) go too."""
        self.active = jax.process_index() == 0
        if not self.active:
            return
        from robust_jax.checkpoint import write_error

        path = os.path.join(workdir, "metrics.jsonl")
        try:
            os.makedirs(workdir, exist_ok=True)
            truncate_metrics(path, resume_step, final_step)
            self._jsonl = open(path, "a")
        except OSError as e:
            raise write_error(path, e, "opening the metrics log") from e
        self._tb = summary_writer_class()(os.path.join(workdir, "tensorboard"),
                                          purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, scalars: dict) -> None:
        if not self.active:
            return
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.active:
            self._jsonl.close()
            self._tb.close()


def summary_writer_class():
    """tensorboardX's `SummaryWriter`, imported without loading torch unless torch is loaded already
    (robust_jax/import_guard.py); loaded after TensorFlow, torchvision would crash (tests/conftest.py)."""
    with import_guard.skipped_import("torch"):
        from tensorboardX import SummaryWriter
    return SummaryWriter


def truncate_metrics(path: str, resume_step: int, final_step: Optional[int] = None) -> int:
    """Rewrites the JSON lines file `path` without the lines a run resumed at `resume_step` logs again (see
    `MetricsWriter`); a line cut short by a kill is dropped too. Returns how many lines were dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if _keep(line, resume_step, final_step)]
    if len(kept) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return len(lines) - len(kept)


def _keep(line: str, resume_step: int, final_step: Optional[int]) -> bool:
    """Whether a logged line stays when the run resumes at `resume_step`."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return False
    if not line.endswith("\n") or not isinstance(entry, dict):
        return False
    step = int(entry.get("step", 0))
    if step > resume_step:
        return False
    if step == resume_step == final_step:
        return not any(k.startswith(AFTER_TRAINING) for k in entry)
    return True
