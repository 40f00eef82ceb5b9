"""Shared fixtures. Tests run on the CPU; JAX compiles are cached per session where possible."""
import gc
import os
import sys

# Python's default collection thresholds (700, 10, 10) are made for small heaps: a test process holds millions of
# objects (TensorFlow, torch, JAX and their caches) and makes thousands more per traced program, so it ran a full
# collection of that heap every few seconds. Measured with gc.callbacks on a 2-core Zen 3: importing torch,
# torchvision, jax, flax, optax, orbax and the trainer spent 1.16 of 6.7 s collecting (0.45 s with these);
# tests/test_vit_at.py + test_faults_storage.py + test_corruptions_noise_blur.py 5.8 CPU-s (14 full collections;
# 1.4 CPU-s, none), test_configs' trace tests 5.0 s (1.0 s), with the same peak memory. Set before the imports.
gc.set_threshold(10_000, 20, 20)

# The suite is the CPU suite: parity tolerances are float32-on-CPU ones, the multi-device tests use fake CPU
# devices, and two pytest-xdist workers must not both preallocate one GPU. JAX_PLATFORMS=... overrides it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is a top-level package of the repository, not of the install
    sys.path.insert(0, ROOT)

# With PYTHONDONTWRITEBYTECODE set (as on our CI machines) and the test command's `pip install --no-compile`,
# no .pyc file is ever written: every process of the suite (both workers, each main.py run, the multi-process
# tests, the notebook kernels) compiled the sources of TensorFlow, torch and JAX again, 12 s of a 32 s main.py
# smoke run on a 2-core Zen 3. The suite keeps that setting's promise (no __pycache__ next to any
# source) and still caches bytecode, under .pytest_cache/pycache, inherited by its subprocesses.
if sys.dont_write_bytecode:
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(ROOT, ".pytest_cache", "pycache")
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# torchvision 0.29.1 (timm, lpips and easyrobust's PGD import it) crashes the process with a segmentation
# fault when it is imported AFTER TensorFlow 2.21; imported first, both work. robust_jax imports TF only when
# an input pipeline runs, but a test worker runs pipeline tests and parity tests in one process, so the
# parity references' torchvision is loaded first.
try:
    import torch  # noqa: F401,E402
    import torchvision  # noqa: F401,E402
except ImportError:  # the parity extra is not installed: those tests skip
    pass

# Every program compiles at LLVM -O0 (tests/xla_flags.py); subprocesses inherit it. Set before JAX creates
# its CPU backend, which reads XLA_FLAGS once.
from xla_flags import with_fast_compile, without_fast_compile  # noqa: E402  (tests/ is on sys.path: no __init__.py)
import file_order  # noqa: E402

os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))

import jax  # noqa: E402
import pytest  # noqa: E402

import mlir_contexts  # noqa: E402

mlir_contexts.reuse()  # one MLIR context per thread for many lowerings (tests/mlir_contexts.py)

# Many tests compile the same programs (smoke configs, shared model shapes); a persistent cache shared by both
# pytest-xdist workers and their subprocesses keeps the suite fast. JAX writes cache entries in place (not
# atomically); with a size limit set it takes a file lock around every read and write (the `filelock` package,
# a test requirement), so the workers can share one directory. That mode rescans the directory on every write,
# so only compiles of 0.5 s or more are cached (a few hundred programs; the thousands of tiny ones would make
# the scans cost more than they save). Its own directory: a cache written without the limit lacks the
# access-time files this mode reads.
_CACHE = os.path.join(ROOT, ".pytest_cache", "jax_compilation_cache_shared")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(16 * 2**30))
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


def pytest_configure(config):
    # pytest-xdist would sort the files by their number of tests after pytest_collection_modifyitems
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    items[:] = file_order.longest_first(items)  # tests/file_order.py


@pytest.fixture
def package_codegen(monkeypatch):
    """The package's programs compile as a user's do (robust_jax.compile_options reads XLA_FLAGS at each jit
    call; without the suite's -O0 there, they get its QUICK_CODEGEN level): for tests whose time is hundreds
    of steps of one program rather than compiling (tests/xla_flags.py)."""
    monkeypatch.setenv("XLA_FLAGS", without_fast_compile(os.environ.get("XLA_FLAGS", "")))
