"""Shared fixtures. Tests run on the CPU; JAX compiles are cached per session where possible."""
import os
import sys

# The suite is the CPU suite: parity tolerances are float32-on-CPU ones, the multi-device tests use fake CPU
# devices, and two pytest-xdist workers must not both preallocate one GPU. JAX_PLATFORMS=... overrides it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is a top-level package of the repository, not of the install
    sys.path.insert(0, ROOT)

# torchvision 0.29.1 (timm, lpips and easyrobust's PGD import it) crashes the process with a segmentation
# fault when it is imported AFTER TensorFlow 2.21; imported first, both work. robust_jax imports TF only when
# an input pipeline runs, but a test worker runs pipeline tests and parity tests in one process, so the
# parity references' torchvision is loaded first.
try:
    import torch  # noqa: F401,E402
    import torchvision  # noqa: F401,E402
except ImportError:  # the parity extra is not installed: those tests skip
    pass

import jax  # noqa: E402

# Many tests compile the same small programs (smoke configs); a persistent cache shared by the test
# session and its subprocesses keeps the suite fast. One directory per pytest-xdist worker: JAX writes
# cache entries in place (not atomically), so two workers must not read each other's half-written files.
_CACHE = os.path.join(ROOT, ".pytest_cache", "jax_compilation_cache" + os.environ.get("PYTEST_XDIST_WORKER", ""))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
