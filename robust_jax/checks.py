"""Input checks at public boundaries: loud, specific errors instead of silently wrong numbers."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


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
    """Images must be float NHWC in the box `bounds` (default [0,1]). The range is checked only for
    concrete (non-traced) arrays."""
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
        return
    # A concrete array closed over inside a jit trace: reduce it on the host, outside the trace.
    values = np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable else None
    if values is None:  # a global array spread over hosts: reduce on the devices, not in a trace
        with jax.ensure_compile_time_eval():
            lo, hi = float(jnp.min(x)), float(jnp.max(x))
    else:
        lo, hi = float(values.min()), float(values.max())
    if lo < lo_b or hi > hi_b:
        hint = ("models normalise inside; pass raw pixels scaled to [0,1]" if (lo_b, hi_b) == (0.0, 1.0)
                else "pass images in the attack's bounds, or the bounds they live in")
        raise ValueError(f"{name} must lie in {box}, got values in [{lo:.4g}, {hi:.4g}] ({hint})")


def _concrete_values(a):
    """`a` as a host array when its values are known now (not traced, fully addressable), else None."""
    if isinstance(a, jax.core.Tracer) or (isinstance(a, jax.Array) and not a.is_fully_addressable):
        return None
    return np.asarray(a)


def check_labels(y, num_examples: int, name: str = "labels", *, num_classes: Optional[int] = None,
                 soft: bool = False) -> None:
    """Labels must be int class indices of shape [num_examples] — or, where the loss takes them (`soft`), float
    soft targets [num_examples, num_classes]. With `num_classes`, concrete labels must lie in [0, num_classes)
    and concrete soft targets be distributions (non-negative rows summing to 1); traced values are not read
    (a label out of range gives a NaN loss or no attack at all, so callers check before `jit` where they can)."""
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
    values = _concrete_values(y) if num_classes is not None else None
    if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must be class indices in [0, {num_classes}) (the model has {num_classes} "
                         f"outputs), got values in [{values.min()}, {values.max()}]")
