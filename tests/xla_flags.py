"""The XLA flags of the test suite's processes: XLA:CPU at LLVM -O0, and helpers for subprocesses' flags.

The suite's test processes compile about 8,600 programs (train steps of every recipe, attack loops,
thousands of eager operations) and run most of them once on small inputs: compiling was half of their time
(939 s of 1,818 s, both workers). At LLVM -O0 XLA:CPU compiles 1.5-3x faster, and the compiled programs run
slower only where elementwise loops are the work (convolutions and dots call the same library kernels): the
whole suite took 641 s instead of 935 s (one run each, 2 cores, fresh compilation cache); the notebook
kernels, which inherit it, 99-107 s instead of 103-117 s for the four (the ViT one, loop-bound, 27-30 s
instead of 17-19 s). Values may differ from the default compile's in the last bits (no floating-point
contraction), as between any two differently compiled programs; users, benchmarks and recorded results get
XLA's default level. tests/conftest.py adds the flag unless XLA_FLAGS chooses a level itself, e.g.
`XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest` tests at the default level.

Tests that run a training or attack loop for hundreds of steps in-process take the `package_codegen` fixture
(tests/conftest.py): while they run, the package's own programs (`robust_jax.compile_options.jit`: train steps,
evaluation, attacks) compile with the package's codegen options as a user gets them, every other program
(eager operations, the tests' own jits) still at -O0. On a 2-core Zen 3 the 480 PGD-AT / standard steps of
tests/test_train.py took 54 s at -O0 and 38 s with the fixture (the same as with every program at -O1); the
VQGAN training tests, the kill/rerun test and the notebooks, compile-bound, were slower or no faster with it.
"""
import os
import re

FAST_COMPILE = "--xla_backend_optimization_level=0"
_LEVEL = re.compile(r"--xla_backend_optimization_level=\S*")


def with_fast_compile(flags: str) -> str:
    """`flags` plus FAST_COMPILE, unless they set an optimisation level already."""
    return flags if _LEVEL.search(flags) else f"{flags} {FAST_COMPILE}".strip()


def without_fast_compile(flags: str) -> str:
    """`flags` less FAST_COMPILE."""
    return " ".join(f for f in flags.split() if f != FAST_COMPILE)


def plus(*flags: str) -> str:
    """This process's XLA_FLAGS (the suite's included) followed by `flags`, for a subprocess."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
