"""The XLA flags of the test suite's processes: quick XLA:CPU compiles, and helpers for subprocesses' flags.

The suite's test processes compile about 9,300 programs (train steps of every recipe, attack loops,
thousands of eager operations) and run most of them once on small inputs: compiling was half of their time
(939 s of 1,818 s, both workers). FAST_COMPILE makes XLA:CPU compile quickly:
- LLVM -O0: 1.5-3x quicker compiles; the programs run slower only where elementwise loops are the work
  (convolutions and dots call the same library kernels): the whole suite took 641 s instead of 935 s (one run
  each, 2 cores, fresh compilation cache); the notebook kernels, which inherit it, 99-107 s instead of
  103-117 s for the four (the ViT one, loop-bound, 27-30 s instead of 17-19 s).
- XLA:CPU's elemental loop emitter instead of its MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`):
  an eager operation compiles in 20 ms instead of 40 ms at -O0 (jaxlib 0.10.2, 2-core Zen 3: 150 shapes of
  `(a * 2 + sin(a)).sum(0)`, 78 vs 163 ms each), a smoke train step 1.2-2.5x quicker (PGD-AT small CNN 0.4-1.0
  vs 1.2-2.1 s, ViT-AT 2.2-4.1 vs 3.6-4.9 s, DAT 1.4-3.3 vs 2.5-4.7 s) and runs 0-15% slower at -O0;
  tests/test_configs.py alone with a fresh compilation cache 136 s instead of 152 s; tests/test_train.py's two
  longest tests, alternating, 68 / 70 s instead of 72 / 77 s.
Values may differ from the default compile's in the last bits (no floating-point contraction), as between any
two differently compiled programs; users, benchmarks and recorded results get XLA's default emitters and the
package's own level (robust_jax/compile_options.py). tests/conftest.py adds each flag unless XLA_FLAGS sets that
option itself, e.g. `XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest` tests at the default level
(with the elemental emitter), `XLA_FLAGS="--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true"`
as users compile.

Tests that run a training or attack loop for hundreds of steps in-process take the `package_codegen` fixture
(tests/conftest.py): while they run, the package's own programs (`robust_jax.compile_options.jit`: train steps,
evaluation, attacks) compile with the package's codegen options and XLA's default emitters as a user gets them,
every other program (eager operations, the tests' own jits) still with FAST_COMPILE. On a 2-core Zen 3 the 480
PGD-AT / standard steps of tests/test_train.py took 54 s at -O0 and 38 s with the fixture (the same as with every
program at -O1); the VQGAN training tests, the kill/rerun test and the notebooks, compile-bound, were slower or
no faster with it.
"""
import os

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _option(flag: str) -> str:
    return flag.split("=", 1)[0]


def with_fast_compile(flags: str) -> str:
    """`flags` plus each FAST_COMPILE flag whose option they do not set already."""
    chosen = {_option(f) for f in flags.split()}
    return " ".join([flags, *(f for f in FAST_COMPILE if _option(f) not in chosen)]).strip()


def without_fast_compile(flags: str) -> str:
    """`flags` less the FAST_COMPILE flags."""
    return " ".join(f for f in flags.split() if f not in FAST_COMPILE)


def plus(*flags: str) -> str:
    """This process's XLA_FLAGS (the suite's included) followed by `flags`, for a subprocess."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
