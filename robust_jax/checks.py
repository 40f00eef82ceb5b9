"""Input checks at public boundaries: loud, specific errors instead of silently wrong numbers."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_images(x, name: str = "images") -> None:
    """Images must be float NHWC in [0,1]. The range is checked only for concrete (non-traced) arrays."""
    shape = np.shape(x)
    if len(shape) != 4:
        raise ValueError(f"{name} must be NHWC images of rank 4, got shape {shape}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point in [0,1], got dtype {dtype} "
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
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0,1], got values in [{lo:.4g}, {hi:.4g}] "
                         "(models normalise inside; pass raw pixels scaled to [0,1])")


def check_labels(y, num_examples: int, name: str = "labels") -> None:
    shape = np.shape(y)
    if len(shape) != 1 or shape[0] != num_examples:
        raise ValueError(f"{name} must be int of shape [{num_examples}], got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {jnp.result_type(y)}")
