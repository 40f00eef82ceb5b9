"""The suite's test processes lower their programs into a shared MLIR context (one per thread) instead of a new
context per program.

JAX lowers every program — each jitted function and each eager operation's one-operation program — into a fresh
MLIR context (`jax._src.interpreters.mlir.make_ir_context`), which loads and registers its dialects first: 5-13 ms
per program on a 2-core Zen 3, more than XLA:CPU's -O0 compile of most of the suite's programs. A test process
lowers thousands of mostly tiny programs (eager assertions and reference computations), so the contexts were about
a tenth of the suite's CPU time (a sampling profile of a whole run: 180 of ~2,200 CPU-s in the test processes), and
each one stays in memory while a cached lowering refers to it.

`reuse(n)` makes `make_ir_context` hand out the calling thread's current context for `n` lowerings before making
a new one. The programs are the same (each lowering builds its own module; only uniqued types and attributes are
shared, and a context is never used by two threads). On tests/test_corruptions_cifar.py, test_attack_primitives.py,
test_amp.py and test_mixacm.py, in one process with a fresh compilation cache, alternating: 93.3 / 97.2 CPU-s
without, 75.3 / 79.4 with (64 or 1024 per context: 81.4 / 82.4), and a peak memory of 1.8 GB instead of 4.0 GB.

It replaces a private JAX function, so it applies only to the JAX versions it was measured with (setup.py's range);
with another, or if the function is gone, the suite runs unchanged, only slower. Users' programs never see it: the
package leaves JAX as it is.
"""
import threading

import jax

TESTED_JAX = ((0, 10), (0, 11))  # [from, to): setup.py's jax range
LOWERINGS_PER_CONTEXT = 256


def reuse(lowerings_per_context: int = LOWERINGS_PER_CONTEXT) -> bool:
    """Shares each thread's MLIR context across `lowerings_per_context` lowerings; returns whether it applied."""
    try:
        from jax._src.interpreters import mlir
    except ImportError:
        return False
    version = tuple(int(part) for part in jax.__version__.split(".")[:2])
    fresh = getattr(mlir, "make_ir_context", None)
    if not (TESTED_JAX[0] <= version < TESTED_JAX[1]) or fresh is None or getattr(fresh, "reused", False):
        return False
    local = threading.local()

    def make_ir_context():
        if getattr(local, "left", 0) == 0:
            local.context, local.left = fresh(), lowerings_per_context
        local.left -= 1
        return local.context

    make_ir_context.reused = True
    mlir.make_ir_context = make_ir_context
    return True
