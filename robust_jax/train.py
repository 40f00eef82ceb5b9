"""`train_and_evaluate(config, workdir)`: the training loop every method and notebook shares.

It builds the run from the config, resumes from the latest checkpoint in `workdir/checkpoints` if
there is one (the data stream is a function of the step, so an interrupted run continues to the same
result), trains with a progress bar, logs metrics to `metrics.jsonl` and TensorBoard at log steps only,
evaluates periodically, checkpoints, and finally evaluates the configured suite into a report.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from tqdm.auto import tqdm

from robust_jax import builders, data, evaluate, methods, parallel
from robust_jax import state as state_lib
from robust_jax.checkpoint import Checkpoints
from robust_jax.metrics_writer import MetricsWriter


class NonFiniteError(FloatingPointError):
    """Raised when a training step produced a NaN/inf loss or gradient."""


def _save_config(config, workdir: str) -> None:
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def _summarise(pending, first_step: int):
    """Mean of the metrics logged since the last log step; raises on a non-finite step."""
    fetched = jax.device_get(pending)
    for i, m in enumerate(fetched):
        if int(m["nonfinite"]):
            raise NonFiniteError(
                f"step {first_step + i + 1}: the loss or a gradient is NaN/inf (the update was skipped; the "
                "last checkpoint is intact). Lower optim.lr, set optim.grad_clip, or check the data.")
    keys = [k for k in fetched[0] if k != "nonfinite"]
    return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming if possible); returns the final evaluation report."""
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    method = methods.get(config.method, run.model, run.num_classes)
    ckpts = Checkpoints(workdir, keep=config.train.get("keep_checkpoints", 2))
    state = ckpts.restore_or(run.state)
    start = int(state.step)
    _save_config(config, workdir)
    writer = MetricsWriter(workdir)
    step_fn = jax.jit(state_lib.make_train_step(method, run.tx, ema_decay=config.optim.get("ema_decay", 0.0)),
                      donate_argnums=0)
    frozen = parallel.replicate(method.frozen, mesh)
    key = jax.random.key(config.seed + 1)
    batches = data.train_batches(config.data, global_batch_size=config.train.batch_size, mesh=mesh,
                                 seed=config.seed, start_step=start)
    log_every, eval_every = config.train.log_every, config.train.get("eval_every", 0)
    ckpt_every = config.train.get("checkpoint_every", 0)
    pending, pending_from = [], start
    bar = tqdm(total=run.total_steps, initial=start, desc="train", disable=jax.process_index() != 0,
               dynamic_ncols=True)
    try:
        for step in range(start, run.total_steps):
            state, metrics = step_fn(state, next(batches), key, frozen)
            pending.append(metrics)
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == run.total_steps:
                scalars = _summarise(pending, pending_from)
                scalars["lr"] = float(run.schedule(step))
                scalars["epoch"] = done / run.steps_per_epoch
                pending, pending_from = [], done
                writer.write(done, scalars)
                bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items() if k in ("loss", "accuracy", "adv_accuracy")})
            if eval_every and done % eval_every == 0 and done != run.total_steps:
                acc = evaluate.run_suite(run.model, state.eval_variables(config.eval.get("use_ema", True)), config,
                                         mesh, suite=config.train.eval_suite, num_examples=config.train.eval_examples,
                                         progress=False)
                writer.write(done, {f"eval/{k}": v for k, v in acc.items()})
                tqdm.write(f"step {done}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in acc.items()))
            if (ckpt_every and done % ckpt_every == 0) or done == run.total_steps:
                ckpts.save(state)
    finally:
        bar.close()
        ckpts.close()
    results = evaluate.run_suite(run.model, state.eval_variables(config.eval.get("use_ema", True)), config, mesh,
                                 suite=config.eval.suite, desc="final eval")
    writer.write(run.total_steps, {f"final/{k}": v for k, v in results.items()})
    writer.close()
    report = evaluate.make_report(config, results, [], f"{ckpts.directory} (step {int(state.step)})")
    if jax.process_index() == 0:
        evaluate.write_report(report, workdir)
        print(json.dumps({"final": {k: round(100 * v, 2) for k, v in results.items()}}))
    return report
