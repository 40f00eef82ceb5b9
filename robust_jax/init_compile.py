"""`jit_init(init)`: the jitted initialisation of a model's variables, optionally compiled at LLVM -O0.

Initialisation runs once per run, but its program — a threefry random draw per parameter — takes XLA:CPU
seconds to compile at the default optimisation level: 4-13 s for the smoke-size models of the recipes on 2
CPU cores, 4-7x the time at -O0 (ResNet-50 12.3 s vs 2.8 s, small CNN 4.3 s vs 0.6 s), while running it takes
milliseconds either way. `ROBUST_JAX_FAST_INIT_COMPILE=1` compiles it at -O0 on the CPU backend. The values are
then those of the default compile for some models (small CNN, PreAct-ResNet-18) and differ in the last bit for
others (floating-point contraction in the normal draws of WRN, ViT, Swin, ResNet-50, VQGAN), so recorded
results are reproduced bit for bit only in the default setting, which runs use. (The test suite compiles
every program at -O0 through XLA_FLAGS: tests/xla_flags.py.)
"""
from __future__ import annotations

import os
from typing import Callable

import jax

ENV = "ROBUST_JAX_FAST_INIT_COMPILE"


def fast_init_compile() -> bool:
    """Whether initialisation compiles at -O0 (env ROBUST_JAX_FAST_INIT_COMPILE=1, CPU backend only)."""
    enabled = os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")
    return enabled and jax.default_backend() == "cpu"


def jit_init(init: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(init)`, at -O0 when `fast_init_compile()`."""
    options = {"xla_backend_optimization_level": 0} if fast_init_compile() else None
    return jax.jit(init, compiler_options=options, **jit_kwargs)
