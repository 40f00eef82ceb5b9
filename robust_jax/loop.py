"""The optimisation loop every training entry point shares (classifiers in train.py, VQGANs in
vqgan_training/): resume-aware step loop with a progress bar, metrics fetched at log steps only (JSON lines +
TensorBoard), a hook for periodic evaluation, periodic checkpoints and a non-finite guard."""
from __future__ import annotations

import os
from typing import Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm


def save_config(config, workdir: str) -> None:
    """The resolved config as `workdir/config.json` (process 0)."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


class NonFiniteError(FloatingPointError):
    """Raised when a training step produced a NaN/inf loss or gradient."""


def summarise(pending, first_step: int):
    """Mean of the metrics logged since the last log step; raises on a non-finite step."""
    fetched = jax.device_get(pending)
    for i, m in enumerate(fetched):
        if int(m["nonfinite"]):
            raise NonFiniteError(
                f"step {first_step + i + 1}: the loss or a gradient is NaN/inf (the update was skipped; the "
                "last checkpoint is intact). Lower optim.lr, set optim.grad_clip, or check the data.")
    keys = [k for k in fetched[0] if k != "nonfinite"]
    return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


def fit(state, step_fn: Callable, batches, *, key, frozen, total_steps: int, steps_per_epoch: int, schedule,
        ckpts, writer, log_every: int, checkpoint_every: int = 0, eval_every: int = 0,
        evaluate: Optional[Callable] = None, shown=("loss", "accuracy", "adv_accuracy")):
    """Runs `state, metrics = step_fn(state, batch, key, frozen)` from `state.step` to `total_steps`.
    `evaluate(state) -> {name: value}` runs every `eval_every` steps (not at the end); the state is saved
    every `checkpoint_every` steps and at the end. Returns the final state."""
    start = int(state.step)
    pending, pending_from = [], start
    bar = tqdm(total=total_steps, initial=start, desc="train", disable=jax.process_index() != 0, dynamic_ncols=True)
    try:
        for step in range(start, total_steps):
            state, metrics = step_fn(state, next(batches), key, frozen)
            pending.append(metrics)
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == total_steps:
                scalars = summarise(pending, pending_from)
                scalars["lr"] = float(schedule(step))
                scalars["epoch"] = done / steps_per_epoch
                pending, pending_from = [], done
                writer.write(done, scalars)
                bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items() if k in shown})
            if evaluate is not None and eval_every and done % eval_every == 0 and done != total_steps:
                results = evaluate(state)
                writer.write(done, {f"eval/{k}": v for k, v in results.items()})
                tqdm.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
            if (checkpoint_every and done % checkpoint_every == 0) or done == total_steps:
                ckpts.save(state)
    finally:
        bar.close()
        ckpts.close()
    return state
