"""What tests make of and read from a run's workdir.

`save_initial_state(config, workdir)`: a workdir whose latest checkpoint is `config`'s initial state.
`logged_metrics(workdir)`: the records of its metrics.jsonl, in order.

The picture tools (robust_jax/tools) read a run's config and latest checkpoint; their tests need such a
workdir, not a trained model (training itself is tested by each recipe's smoke run in test_configs.py).
"""
import json
import os

from robust_jax import builders, parallel
from robust_jax.checkpoint import Checkpoints


def save_initial_state(config, workdir: str) -> None:
    run = builders.build_run(config, parallel.make_mesh())
    ckpts = Checkpoints(workdir)
    ckpts.save(run.state, force=True)
    ckpts.close()


def logged_metrics(workdir: str) -> list:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
