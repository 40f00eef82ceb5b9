"""Fusion boundaries: compute part of a jitted program as a computation of its own.

XLA fuses elementwise producers into their consumers. On XLA:CPU that is sometimes much slower than
writing the producer out once: a multi-tap consumer recomputes the producer per tap, a transposing
consumer reads every fused input in transposed order, a fused loop mixing integer hashing with
transcendental functions stops vectorising. `lax.optimization_barrier` does not stop fusion on
XLA:CPU; a conditional does. Used by the corruptions (JPEG/pixelate stages, random words) and by the
convolution's weight gradient (`models.layers`); each call site says what it measured.
"""
from __future__ import annotations

import jax


def separately(fn, *args):
    """`fn(*args)`, compiled as a computation of its own: XLA fuses nothing across its boundary.

    It is a conditional whose two branches are both `fn`, so the predicate (one input element == 0)
    only has to be opaque to the compiler: its value does not matter (`>= 0` would be folded away for
    unsigned inputs). The output is written straight into the result (no copy). Differentiable (a
    conditional is). Under `vmap` the predicate is batched and the conditional becomes a select of both
    branches, inlined and fused again (same values, computed twice): apply it to whole batches, or use
    `separately_batched` for functions that need no derivatives."""
    first = jax.tree_util.tree_leaves(args)[0]
    predicate = first[(0,) * first.ndim] == 0  # one element: the predicate must not cost a pass over the input
    return jax.lax.cond(predicate, fn, fn, *args)


def separately_batched(fn):
    """`fn` wrapped so that `wrapped(x)` is `separately(fn, x)`, under `vmap` too.

    The batching rule runs the vmapped `fn` in one conditional over the whole batch instead of the
    select that `vmap` makes of `separately`. Not differentiable (`jax.custom_batching.custom_vmap`
    functions are not): for integer inputs such as random key words."""
    @jax.custom_batching.custom_vmap
    def run(x):
        return separately(fn, x)

    @run.def_vmap
    def _batched(axis_size, in_batched, x):
        del axis_size
        if not in_batched[0]:
            return run(x), False
        return separately_batched(jax.vmap(fn))(x), True

    return run
