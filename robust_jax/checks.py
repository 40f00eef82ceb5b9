"""Input checks at public boundaries: loud, specific errors instead of silently wrong numbers."""
from __future__ import annotations

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


def check_labels(y, num_examples: int, name: str = "labels") -> None:
    shape = np.shape(y)
    if len(shape) != 1 or shape[0] != num_examples:
        raise ValueError(f"{name} must be int of shape [{num_examples}], got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {jnp.result_type(y)}")
