"""Model selection by periodic evaluation (`train.select_best`): the state with the highest value of one
periodic-evaluation metric is kept in `workdir/best_checkpoint`, with its record (metric, value, step) in
`workdir/best_checkpoint.json`; the run's final evaluation, `--mode eval` and another run's
`model.init_from` of the workdir then use that state instead of the last one.

This is how AdvBN's reference picks its model (best clean-BN top-1 on the validation set, checked each
epoch). The record survives interruptions: a resumed run compares against the best seen before it.
Ties keep the earlier state.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax

from robust_jax.checkpoint import Checkpoints
from robust_jax.evaluation.chunks import write_json

DIRECTORY = "best_checkpoint"


def record_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), DIRECTORY + ".json")


def read_record(workdir: str) -> Optional[dict]:
    """{'metric', 'value', 'step'} of the best state kept in `workdir`, or None when it keeps none."""
    path = record_path(workdir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def weights_checkpoints(workdir: str) -> Checkpoints:
    """The checkpoints a workdir's weights are read from: the best state when the run selected one, else
    the latest checkpoints."""
    if read_record(workdir) is not None:
        return Checkpoints(workdir, keep=1, name=DIRECTORY)
    return Checkpoints(workdir)


class BestCheckpoint:
    """Keeps the best state by `metric` (a name the periodic evaluation reports, e.g. 'clean')."""

    def __init__(self, workdir: str, metric: str):
        self.workdir = workdir
        self.metric = metric
        self.record = read_record(workdir)
        if self.record is not None and self.record["metric"] != metric:
            raise ValueError(
                f"{record_path(workdir)} selects by {self.record['metric']!r}, the config by {metric!r}: keep "
                f"train.select_best={self.record['metric']!r} for this workdir, or use a new one")
        self.ckpts = Checkpoints(workdir, keep=1, name=DIRECTORY)

    @property
    def directory(self) -> str:
        return self.ckpts.directory

    def offer(self, state, results: dict) -> bool:
        """Saves `state` if `results[metric]` beats the best so far; returns whether it did."""
        if self.metric not in results:
            raise KeyError(f"train.select_best={self.metric!r} is not among the periodic evaluation's results "
                           f"{sorted(results)}: add it to train.eval_suite")
        value, step = float(results[self.metric]), int(state.step)
        if self.record is not None and value <= self.record["value"]:
            return False
        if self.ckpts.latest_step() != step:  # equal: saved before an interruption, the record was not
            self.ckpts.save(state, force=True)
            self.ckpts.manager.wait_until_finished()
        self.record = {"metric": self.metric, "value": value, "step": step}
        if jax.process_index() == 0:
            write_json(record_path(self.workdir), self.record)
        return True

    def restore_weights(self, template):
        """`template` with the best state's step, params, model_state and EMA."""
        return self.ckpts.restore_weights(template)

    def close(self) -> None:
        self.ckpts.close()
