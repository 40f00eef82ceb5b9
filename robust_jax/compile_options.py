"""Per-compile XLA options for the package's jitted programs on CPU: the faster convolution path, quicker codegen.

jaxlib 0.10.2 sends fp32 convolutions on CPU to YNNPACK fusions by default; on the AVX-512 CPUs we
measured (2 cores of an AMD EPYC and of an Intel Xeon) those are up to 2x slower than XLA's Eigen
convolutions (benchmarks/README.md, "Which convolution kernels" and "Issue 17"), and a PGD-AT step is
1.3-1.4x slower as a whole. `cpu_compiler_options()` returns the per-compile options that keep
YNNPACK for reductions and dots and run convolutions on Eigen (FAST_CONV), and that compile XLA's own fused
loops at LLVM optimisation level 1 instead of jaxlib's default (QUICK_CODEGEN: the programs' time is in the
convolution and dot libraries, so they run as fast and return the same bits, and compile 12-27% quicker: the
PGD-AT step 4.19 -> 3.70 s, the PGD evaluation attack 1.33 -> 0.97 s, the small twin CNN's AutoAttack 4.6 -> 3.5 s
of compiling, a third and then a quarter of its run; benchmarks/README.md, "Compile level"). Both only when the
backend is CPU and the jaxlib version is one where the options exist and were measured (an option XLA does not
know fails the compile); an option the user's own `XLA_FLAGS` names is left to the user.

Every program the package compiles (train steps, evaluation, AutoAttack) is jitted with `compile_options.jit`,
which picks the options when it is called, so cached jitted functions follow the current switch. Off switches
(all options, i.e. jaxlib's defaults): the config field `xla_cpu_fast_conv` (applied by `train_and_evaluate`,
`evaluate` and VQGAN training through `configure(config)`, a process-wide switch that holds until the next run
configures it) and the environment variable `ROBUST_JAX_XLA_CPU_FAST_CONV=0`; either one turns them off. Only
speed and the rounding of convolutions change (a long training run then follows a different, equally good
trajectory).
Library functions called inside a user's own `jax.jit` (attacks, losses) cannot choose compile options:
jit with `robust_jax.compile_options.jit` (or pass `compiler_options=cpu_compiler_options()`) to get them.
Programs of another kind name their own measured CPU options (`jit(fn, cpu_options=...)`, e.g. the emitter
choice of `robust_jax.corruptions.CPU_COMPILER_OPTIONS`), applied under the same conditions and switches.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Optional

import jax

ENV = "ROBUST_JAX_XLA_CPU_FAST_CONV"
# Convolutions on XLA:CPU's Eigen path; reductions (BatchNorm statistics) and dots stay on YNNPACK.
FAST_CONV = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# XLA's own fused loops compiled at LLVM -O1 (jaxlib's default is higher): same values, quicker compiles.
QUICK_CODEGEN = {"xla_backend_optimization_level": 1}
CPU_OPTIONS = {**FAST_CONV, **QUICK_CODEGEN}
# jaxlib versions [from, to) where the option exists and the Eigen path was measured faster.
JAXLIB_RANGE = ((0, 10, 2), (0, 11, 0))

_state = {"config": True}  # the last `configure` call; True until one says otherwise


def _version_tuple(v: str) -> tuple:
    out = [int(m.group()) if m else 0 for m in (re.match(r"\d+", p) for p in v.split(".")[:3])]
    return tuple(out + [0] * (3 - len(out)))


@functools.lru_cache(maxsize=None)
def jaxlib_supported(version: Optional[str] = None) -> bool:
    """Whether the installed (or the given) jaxlib version is in JAXLIB_RANGE."""
    if version is None:
        import jaxlib.version

        version = jaxlib.version.__version__
    lo, hi = JAXLIB_RANGE
    return lo <= _version_tuple(version) < hi


def env_enabled() -> bool:
    """False when ROBUST_JAX_XLA_CPU_FAST_CONV is 0/false/no/off."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def configure(config_or_flag) -> None:
    """Sets the switch from a run's config (its top-level `xla_cpu_fast_conv`, default True) or a bool."""
    if isinstance(config_or_flag, bool):
        _state["config"] = config_or_flag
    else:
        _state["config"] = bool(getattr(config_or_flag, "xla_cpu_fast_conv", True))


def enabled() -> bool:
    """The switch: on unless the last configured config or the environment variable turns it off."""
    return _state["config"] and env_enabled()


def _on_cpu(options: dict, backend: Optional[str]) -> dict:
    """`options` on CPU with a jaxlib in JAXLIB_RANGE, less any option that XLA_FLAGS sets itself (the user's
    choice wins); else {}."""
    if (backend or jax.default_backend()) != "cpu" or not jaxlib_supported():
        return {}
    user_flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in options.items() if k not in user_flags}


def cpu_compiler_options(backend: Optional[str] = None, *, fast_conv: Optional[bool] = None) -> dict:
    """The per-compile options for `jax.jit(..., compiler_options=...)`: CPU_OPTIONS on CPU when the switch is
    on (`fast_conv` overrides it) and the jaxlib version is in JAXLIB_RANGE, less any option that XLA_FLAGS
    sets itself (the user's choice wins); else {}."""
    if not (enabled() if fast_conv is None else fast_conv):
        return {}
    return _on_cpu(CPU_OPTIONS, backend)


def applicable(options: dict, backend: Optional[str] = None) -> dict:
    """A program's own measured CPU `options` under the same conditions as `cpu_compiler_options`: on CPU,
    jaxlib in JAXLIB_RANGE, the switch on, less what XLA_FLAGS sets; else {}."""
    return _on_cpu(options, backend) if options and enabled() else {}


class _Jit:
    """`jax.jit(fn, compiler_options=options(), **kwargs)`, the options read at each call (one jitted function
    per distinct options); other attributes (`lower`, `trace`, ...) go to the current one."""

    def __init__(self, fn, kwargs, options=cpu_compiler_options):
        self._fn, self._kwargs, self._jitted, self._options = fn, kwargs, {}, options
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)

    def current(self):
        opts = self._options()
        key = tuple(sorted(opts.items()))
        j = self._jitted.get(key)
        if j is None:
            j = self._jitted[key] = jax.jit(self._fn, compiler_options=opts or None, **self._kwargs)
        return j

    def __call__(self, *args, **kwargs):
        return self.current()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_fn", "_kwargs", "_jitted", "_options"):
            raise AttributeError(name)
        return getattr(self.current(), name)


def jit(fn=None, *, cpu_options: Optional[dict] = None, **kwargs):
    """`jax.jit` with the package's compile options (`cpu_compiler_options()`), or with `cpu_options`, the
    program's own (where `applicable`), instead; usable as a decorator."""
    options = cpu_compiler_options if cpu_options is None else functools.partial(applicable, dict(cpu_options))
    if fn is None:
        return lambda f: _Jit(f, kwargs, options)
    return _Jit(fn, kwargs, options)
