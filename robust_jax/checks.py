"""Input checks at public boundaries: loud, specific errors instead of silently wrong numbers.

Shapes and dtypes are checked whenever a function is traced. Values (the [0,1] range of images, the class range
of labels) are read where they are concrete; under `jit` they are traced, and are checked only with the debug
switch on — `enable_traced_checks()` or the environment variable `ROBUST_JAX_CHECKS=1` — which adds a
`jax.debug.callback` that raises the same ValueError when the compiled program runs (surfacing as a
`jax.errors.JaxRuntimeError` that carries the message). The switch is read when a function is traced: set it
before the first call of a jitted function (a compiled function keeps what it was traced with). It costs a
host round trip per checked array and step, so it is meant for debugging, not for production runs.
"""
from __future__ import annotations

import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


_ENV = "ROBUST_JAX_CHECKS"
_traced = {"on": os.environ.get(_ENV, "").strip().lower() not in ("", "0", "false", "no")}


def enable_traced_checks(enabled: bool = True) -> bool:
    """Turns the value checks of traced arrays (under `jit`, `vmap`, `grad`) on or off; returns the previous
    setting. Equivalent to starting Python with ROBUST_JAX_CHECKS=1. Read at trace time (module docstring)."""
    previous = _traced["on"]
    _traced["on"] = bool(enabled)
    return previous


def traced_checks_enabled() -> bool:
    """Whether traced values are checked (`enable_traced_checks`, env ROBUST_JAX_CHECKS)."""
    return _traced["on"]


def _check_traced_range(a, problem, name: str) -> None:
    """With the debug switch on, checks the traced array `a` when the program runs: `problem(lo, hi)` gets the
    concrete min and max and returns an error message, or None when they are fine; the callback raises it.
    Without the switch, nothing is added to the program."""
    if not _traced["on"] or not np.size(a):
        return

    def callback(lo, hi):
        message = problem(lo.item(), hi.item())
        if message is not None:
            raise ValueError(f"{message} [traced check of {name}, ROBUST_JAX_CHECKS]")

    jax.debug.callback(callback, jnp.min(a), jnp.max(a))


def check_bounds(bounds) -> tuple:
    """`bounds=(lo, hi)`, the box valid inputs live in: two finite Python numbers with lo < hi (static,
    as the attacks build their programs around them). Returns them as floats."""
    try:
        lo, hi = bounds
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(f"bounds must be a pair of numbers (lo, hi), got {bounds!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:g},{hi:g}]"


def check_images(x, name: str = "images", bounds=(0.0, 1.0)) -> None:
    """Images must be float NHWC in the box `bounds` (default [0,1]). The range is read from concrete arrays;
    a traced one (under `jit`) is checked only with the debug switch on (`enable_traced_checks()` or env
    ROBUST_JAX_CHECKS=1: the compiled program then raises when it runs; module docstring)."""
    lo_b, hi_b = check_bounds(bounds)
    box = _interval(lo_b, hi_b)
    shape = np.shape(x)
    if len(shape) != 4:
        raise ValueError(f"{name} must be NHWC images of rank 4, got shape {shape}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point in {box}, got dtype {dtype} "
                         "(convert uint8 images with x / 255)")
    if isinstance(x, jax.core.Tracer):
        _check_traced_range(x, lambda lo, hi: _range_problem(name, box, lo, hi, (lo_b, hi_b)), name)
        return
    # A concrete array closed over inside a jit trace: reduce it on the host, outside the trace.
    values = np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable else None
    if values is None:  # a global array spread over hosts: reduce on the devices, not in a trace
        with jax.ensure_compile_time_eval():
            lo, hi = float(jnp.min(x)), float(jnp.max(x))
    else:
        lo, hi = float(values.min()), float(values.max())
    message = _range_problem(name, box, lo, hi, (lo_b, hi_b))
    if message is not None:
        raise ValueError(message)


def _range_problem(name: str, box: str, lo: float, hi: float, bounds) -> Optional[str]:
    """The error message for images of `name` spanning [lo, hi] outside `bounds`, or None when inside."""
    if not (lo < bounds[0] or hi > bounds[1]):
        return None
    hint = ("models normalise inside; pass raw pixels scaled to [0,1]" if tuple(bounds) == (0.0, 1.0)
            else "pass images in the attack's bounds, or the bounds they live in")
    return f"{name} must lie in {box}, got values in [{lo:.4g}, {hi:.4g}] ({hint})"


def _concrete_values(a):
    """`a` as a host array when its values are known now (not traced, fully addressable), else None."""
    if isinstance(a, jax.core.Tracer) or (isinstance(a, jax.Array) and not a.is_fully_addressable):
        return None
    return np.asarray(a)


def check_labels(y, num_examples: int, name: str = "labels", *, num_classes: Optional[int] = None,
                 soft: bool = False) -> None:
    """Labels must be int class indices of shape [num_examples] — or, where the loss takes them (`soft`), float
    soft targets [num_examples, num_classes]. With `num_classes`, concrete labels must lie in [0, num_classes)
    and concrete soft targets be distributions (non-negative rows summing to 1). Traced labels (under `jit`) are
    range-checked only with the debug switch on (`enable_traced_checks()` or env ROBUST_JAX_CHECKS=1; module
    docstring): a label out of range gives a NaN loss or no attack at all, so callers check before `jit` where
    they can."""
    shape = np.shape(y)
    dtype = jnp.result_type(y)
    if soft and len(shape) == 2 and jnp.issubdtype(dtype, jnp.floating):
        if shape[0] != num_examples or (num_classes is not None and shape[1] != num_classes):
            raise ValueError(f"{name}: soft targets must have shape [{num_examples}, "
                             f"{num_classes if num_classes is not None else 'num_classes'}], got {shape}")
        values = _concrete_values(y)
        if values is not None and (values.min() < -1e-6 or not np.allclose(values.sum(-1), 1.0, atol=1e-4)):
            raise ValueError(f"{name}: soft targets must be class distributions (non-negative, rows summing "
                             f"to 1), got values in [{values.min():.4g}, {values.max():.4g}] and row sums in "
                             f"[{values.sum(-1).min():.4g}, {values.sum(-1).max():.4g}]")
        return
    if len(shape) != 1 or shape[0] != num_examples:
        also = f" or float soft targets [{num_examples}, K]" if soft else ""
        raise ValueError(f"{name} must be int class indices of shape [{num_examples}]{also}, got shape {shape}"
                         + (" (flatten a [B, 1] column with y[:, 0])" if shape == (num_examples, 1) else ""))
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {dtype}")
    if num_classes is None:
        return
    values = _concrete_values(y)
    if values is None:
        _check_traced_range(y, lambda lo, hi: _label_problem(name, num_classes, lo, hi), name)
    elif values.size:
        message = _label_problem(name, num_classes, values.min(), values.max())
        if message is not None:
            raise ValueError(message)


def _label_problem(name: str, num_classes: int, lo, hi) -> Optional[str]:
    """The error message for labels of `name` spanning [lo, hi] outside [0, num_classes), or None."""
    if not (lo < 0 or hi >= num_classes):
        return None
    return (f"{name} must be class indices in [0, {num_classes}) (the model has {num_classes} outputs), got "
            f"values in [{lo}, {hi}]")


def check_batch(batch, name: str = "batch") -> None:
    """A training batch `{'image': float NHWC in [0,1], 'label': int [B] (or soft targets [B, K])}` at the top
    of a method's loss: shapes at trace time, values where concrete or with the traced-check switch on."""
    if "image" not in batch or "label" not in batch:
        raise ValueError(f"{name} must be a dict with 'image' and 'label', got keys {sorted(batch)}")
    check_images(batch["image"], f"{name}['image']")
    check_labels(batch["label"], np.shape(batch["image"])[0], f"{name}['label']", soft=True)
