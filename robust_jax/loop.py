"""The optimisation loop every training entry point shares (classifiers in train.py, VQGANs in
vqgan_training/): resume-aware step loop with a progress bar, metrics fetched at log steps only (JSON lines +
TensorBoard), a hook for periodic evaluation, checkpoints and a non-finite guard.

Nothing is lost to an interruption: the state is saved every `checkpoint_minutes` of wall time, every
`checkpoint_every` steps, at each periodic evaluation and at the end, whichever comes first; SIGINT (Ctrl-C)
and SIGTERM (a preempted TPU VM, a batch scheduler) finish the current step, save it, and stop with one line
saying where — running the same command again resumes there.
"""
from __future__ import annotations

import signal
import time
from typing import Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm


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


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) stopped training after the current step was saved; the message says where."""


class TrainingTerminated(SystemExit):
    """SIGTERM (preemption, a scheduler) stopped training after the current step was saved; leaving the
    program with it prints the message, which says where, and sets exit status 1."""


class StopRequests:
    """While active (a `with` block in the main thread), SIGINT and SIGTERM only record that a stop was asked
    for, so the loop can finish its step and save. The handler puts the previous one back at once: a second
    Ctrl-C interrupts immediately (e.g. during a long compile), a second SIGTERM acts as it did before. A signal
    the process ignores (SIGINT of a background job started by a shell script, `nohup`) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (a worker thread): signals act as usual
                break
        return self

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False


def _anyone(*flags: bool):
    """The flags OR-ed over processes (every process must take the same save/stop decision: saving is a
    collective); with one process, the flags themselves."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
    return tuple(bool(v) for v in gathered.reshape(-1, len(flags)).any(axis=0))


def _stop(signum: int, directory: str, step: int):
    """Raises the exception for a stop asked by `signum`, step `step` being saved in `directory`."""
    message = (f"training stopped by {signal.Signals(signum).name} after step {step}: the state is saved in "
               f"{directory}/{step}; run the same command again to resume from there.")
    raise (TrainingTerminated if signum == signal.SIGTERM else TrainingInterrupted)(message)


def fit(state, step_fn: Callable, batches, *, key, frozen, total_steps: int, steps_per_epoch: int, schedule,
        ckpts, writer, log_every: int, checkpoint_every: int = 0, checkpoint_minutes: float = 0.0,
        eval_every: int = 0, evaluate: Optional[Callable] = None, shown=("loss", "accuracy", "adv_accuracy")):
    """Runs `state, metrics = step_fn(state, batch, key, frozen)` from `state.step` to `total_steps`.
    `evaluate(state) -> {name: value}` runs every `eval_every` steps (not at the end). The state is saved
    when `checkpoint_minutes` of wall time (0: no limit) passed since the last save, every `checkpoint_every`
    steps (0: never), at every `eval_every`-th step, at the end, and after the step during which SIGINT or
    SIGTERM arrived — then `TrainingInterrupted` (a KeyboardInterrupt) or `TrainingTerminated` (a SystemExit)
    says where. With several processes, the clock and signals are looked at on log steps only (all processes
    agree there). Before the first step, the checkpoint directory must take a write (a full or read-only disk
    fails now, not hours later). Returns the final state."""
    start = int(state.step)
    ckpts.prepare_to_save()
    pending, pending_from = [], start
    several = jax.process_count() > 1
    last_save = time.monotonic()
    bar = tqdm(total=total_steps, initial=start, desc="train", disable=jax.process_index() != 0, dynamic_ncols=True)
    stop, done, stopping = StopRequests(), start, False
    try:
        with stop:
            for step in range(start, total_steps):
                state, metrics = step_fn(state, next(batches), key, frozen)
                pending.append(metrics)
                done = step + 1
                bar.update(1)
                logged = done % log_every == 0 or done == total_steps
                if logged:
                    scalars = summarise(pending, pending_from)
                    scalars["lr"] = float(schedule(step))
                    scalars["epoch"] = done / steps_per_epoch
                    pending, pending_from = [], done
                    writer.write(done, scalars)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items() if k in shown})
                periodic = bool(eval_every) and done % eval_every == 0
                if evaluate is not None and periodic and done != total_steps:
                    results = evaluate(state)
                    writer.write(done, {f"eval/{k}": v for k, v in results.items()})
                    tqdm.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
                save = done == total_steps or periodic or bool(checkpoint_every and done % checkpoint_every == 0)
                if logged or not several:
                    timed = bool(checkpoint_minutes) and time.monotonic() - last_save >= 60 * checkpoint_minutes
                    timed, stopping = _anyone(timed, stop.received is not None)
                    save = save or timed or stopping
                if save:
                    ckpts.save(state)
                    last_save = time.monotonic()
                if stopping:
                    break
    finally:
        bar.close()
        ckpts.close()
    if stopping or (stop.received is not None and done == total_steps):  # the last step is saved either way
        _stop(stop.received or signal.SIGTERM, ckpts.directory, done)  # None: another process was signalled
    return state
