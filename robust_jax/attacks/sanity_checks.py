"""Sanity checks around an AutoAttack evaluation (after Croce & Hein 2020, `pyautoattack/checks.py`).

Before attacking, AutoAttack looks for model properties that make its numbers unreliable and warns
(`SanityCheckWarning`): a randomised forward pass (use version="rand"), probabilities instead of logits,
inputs whose gradient is exactly zero (gradient masking), and more target classes than the model has.
After attacking, it warns when the black-box Square attack beat the white-box attacks (a sign of
gradient masking). These are properties of the model, hence warnings.

`check_result` is different: every example the evaluation reports as fooled must lie in the eps-ball,
in the input box (default [0,1]), and be misclassified by the model, and every other example must be
returned unchanged. A failure there is a bug in an attack or in the driver, not a property of the model,
so it raises.

Deliberate differences from the reference:
- the randomness check compares two forward passes (the reference: five eager ones) of the first batch,
  each traced on its own into one compiled program (`probe_model`): under `jit` a JAX function can only
  be random through a key, so Python-level randomness (numpy, time), drawn anew at every call of the
  model, is what two calls can reveal and what would otherwise be frozen into the compiled attack; one
  program instead of eager calls because eager execution compiles every operation of the model on its
  own (over 40 small compiles for a ResNet-18);
- the zero-gradient check runs once on the first batch for both the cross-entropy and the DLR loss at
  the clean-correct points (the reference checks the DLR gradient inside every APGD-DLR/-T run);
- the reference's "dynamic defence" check (a forward pass that calls autograd) has no JAX analogue:
  `apply_fn` is a pure function, so it is not ported;
- `check_result` raises instead of only logging the largest perturbation.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.attacks import losses as losses_lib


class SanityCheckWarning(UserWarning):
    """A property of the model that can make an AutoAttack evaluation unreliable."""


def _warn(msg: str, log: Optional[Callable] = None):
    warnings.warn(msg, SanityCheckWarning, stacklevel=3)
    if log is not None:
        log("WARNING: " + msg)


def _row_normalised(z):
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-10)


def check_randomized(outputs: Sequence, y, *, alpha: float = 1e-4, log=None) -> bool:
    """Warns (and returns True) if the logits of forward passes of the same inputs (`outputs`, e.g.
    `probe_model`'s) disagree: the number of correct predictions differs, or the L2-normalised logits
    differ by more than `alpha` in L2 norm."""
    outs = [np.asarray(o) for o in outputs]
    n = len(outs)
    correct = [int(np.sum(o.argmax(-1) == np.asarray(y))) for o in outs]
    normed = [_row_normalised(o) for o in outs]
    diff = max((float(np.linalg.norm(normed[i] - normed[j], axis=1).max())
                for i in range(n) for j in range(i + 1, n)), default=0.0)
    random = len(set(correct)) > 1 or diff > alpha
    if random:
        _warn(f"two identical forward passes differ (max L2 distance of normalised logits {diff:.3g}, "
              f"correct predictions {correct}): the model seems randomised; evaluate it with "
              "version='rand' (expectation over transformation)", log)
    return random


def check_range_output(logits, *, alpha: float = 1e-5, log=None) -> int:
    """Warns if the outputs look like a probability distribution (in [0,1], rows summing to 1): attacks
    need logits. Returns the number of classes."""
    z = np.asarray(logits, np.float64)
    if z.max() < 1.0 + alpha and z.min() > -alpha and np.all(np.abs(z.sum(-1) - 1.0) < alpha):
        _warn("the model's outputs are a probability distribution (rows non-negative, summing to 1); "
              "AutoAttack needs the logits (remove the final softmax)", log)
    return int(z.shape[-1])


def input_gradients(logits_fn: Callable, x, y) -> dict:
    """Per-loss input gradients at x: {'ce': ..., 'dlr': ...} (DLR only with at least 3 classes)."""
    def total(loss):
        return lambda xa: jnp.sum(loss(logits_fn(xa), y))

    grads = {"ce": jax.grad(total(losses_lib.cross_entropy))(x)}
    if jax.eval_shape(logits_fn, x).shape[-1] >= 3:
        grads["dlr"] = jax.grad(total(losses_lib.dlr))(x)
    return grads


def probe_model(logits_fn: Callable, x, y, *, passes: int = 2):
    """What the checks before an attack need, for one compiled program: the logits of `passes` calls of
    `logits_fn(x)`, each traced on its own (Python-level randomness is drawn anew per call, as between eager
    calls; for a deterministic model XLA merges the identical passes into one), and `input_gradients` at x.
    Returns (list of logits, gradients)."""
    return [logits_fn(x) for _ in range(passes)], input_gradients(logits_fn, x, y)


def check_zero_gradients(grads: dict, *, log=None) -> int:
    """Warns if some examples have an all-zero input gradient for some loss; returns how many (max over
    losses). Zero gradients make gradient-based attacks fail silently (gradient masking)."""
    worst = 0
    for name, g in grads.items():
        g = np.asarray(g).reshape(len(g), -1)
        zero = int(np.sum(np.abs(g).sum(-1) == 0))
        worst = max(worst, zero)
        if zero:
            _warn(f"{zero} of {len(g)} points have a zero input gradient of the {name} loss: gradient-based "
                  "attacks are unreliable on them", log)
    return worst


def check_n_classes(n_classes: int, attacks: Sequence[str], n_targets: int, *, log=None) -> None:
    """Warns when the DLR losses are undefined (fewer than 3 / 4 classes) or more targets are requested
    than there are other classes."""
    msgs = []
    if "apgd-dlr" in attacks or "apgd-t" in attacks:
        if n_classes <= 2:
            msgs.append(f"with only {n_classes} classes the DLR loss is undefined")
        elif n_classes == 3 and "apgd-t" in attacks:
            msgs.append("with only 3 classes the targeted DLR loss is undefined")
    for name in ("apgd-t", "fab-t"):
        if name in attacks and n_targets + 1 > n_classes:
            msgs.append(f"{name.upper()} asks for {n_targets} target classes, only {n_classes - 1} exist")
    if msgs:
        _warn("; ".join(msgs), log)


def check_square_sr(per_attack: dict, *, alpha: float = 0.002, log=None) -> bool:
    """Warns if Square (black-box) lowered the robust accuracy below every earlier white-box stage by
    more than `alpha`: the gradients likely mislead the white-box attacks."""
    others = [v for k, v in per_attack.items() if k != "square"]
    if "square" not in per_attack or len(others) < 2:
        return False
    drop = min(others) - per_attack["square"]
    if drop > alpha:
        _warn(f"Square Attack lowered the robust accuracy by {drop:.2%} after the white-box attacks: the "
              "evaluation may be unreliable (gradient masking?); try more Square queries/restarts or an "
              "adaptive attack", log)
        return True
    return False


def perturbation_norms(x_adv, x, norm: str) -> np.ndarray:
    """Per-example Linf or L2 norm of x_adv - x."""
    d = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return np.abs(d).max(1) if norm == "linf" else np.sqrt(np.square(d).sum(1))


def check_result(x, x_adv, y, fooled, *, norm: str, eps: float, logits=None, tol: float = 1e-5,
                 margin_tol: float = 1e-4, bounds=(0.0, 1.0)) -> None:
    """Raises RuntimeError unless: every `fooled` example lies within eps (+`tol`) of x in `norm`, in
    the box `bounds`, is finite, and (if `logits` of x_adv are given) is misclassified; every other example is
    returned unchanged. A re-computed logit may tie within `margin_tol` * max(1, |logits|) of the label's,
    as the re-evaluation runs in another batch composition than the attack (float reassociation)."""
    lo, hi = bounds
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    y, fooled = np.asarray(y), np.asarray(fooled, bool)
    problems = []
    if x_adv.shape != x.shape:
        problems.append(f"x_adv has shape {x_adv.shape}, x has {x.shape}")
    else:
        bad = ~np.isfinite(x_adv).reshape(len(x), -1).all(1)
        bad |= (x_adv.reshape(len(x), -1).min(1) < lo) | (x_adv.reshape(len(x), -1).max(1) > hi)
        if bad.any():
            problems.append(f"{bad.sum()} examples are outside [{lo:g},{hi:g}] or not finite "
                            f"(first {np.flatnonzero(bad)[:5]})")
        norms = perturbation_norms(x_adv, x, norm)
        out = fooled & (norms > eps + tol)
        if out.any():
            problems.append(f"{out.sum()} fooled examples lie outside the {norm} ball of radius {eps} "
                            f"(largest norm {norms[out].max():.6g}, first {np.flatnonzero(out)[:5]})")
        moved = ~fooled & (norms > 0)
        if moved.any():
            problems.append(f"{moved.sum()} examples not counted as fooled were changed "
                            f"(first {np.flatnonzero(moved)[:5]})")
        if logits is not None and fooled.any():
            z = np.asarray(logits, np.float64)
            zy = z[np.arange(len(z)), y]
            other = np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z).max(1)
            scale = np.maximum(1.0, np.abs(z).max(1))
            still = fooled & (zy - other > margin_tol * scale)
            if still.any():
                problems.append(f"{still.sum()} examples counted as fooled are classified correctly "
                                f"(first {np.flatnonzero(still)[:5]})")
    if problems:
        raise RuntimeError("AutoAttack result check failed (a bug in an attack or the driver, not a model "
                           "property): " + "; ".join(problems))
