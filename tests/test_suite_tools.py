"""The suite's own helpers: the workers' file order (tests/file_order.py), the XLA flags its processes get
(tests/xla_flags.py) and their shared MLIR contexts (tests/mlir_contexts.py)."""
import pathlib
import threading
import types

import jax
import jax.numpy as jnp
import numpy as np

import file_order
import mlir_contexts
import xla_flags


def _items(*names):
    return [types.SimpleNamespace(path=pathlib.Path("/repo/tests") / name, name=f"{name}#{i}")
            for i, name in enumerate(names)]


def test_files_go_longest_first_keeping_each_files_order_and_unknown_files_lead():
    items = _items("test_optim.py", "test_configs.py", "test_optim.py", "test_brand_new.py", "test_train.py",
                   "test_configs.py")
    order = [item.name for item in file_order.longest_first(items)]
    assert order == ["test_brand_new.py#3", "test_configs.py#1", "test_configs.py#5", "test_train.py#4",
                     "test_optim.py#0", "test_optim.py#2"]


def test_fast_compile_flags_are_added_unless_the_option_is_set_and_removed_again():
    level, emitters = xla_flags.FAST_COMPILE
    assert xla_flags.with_fast_compile("") == f"{level} {emitters}"
    mine = "--xla_backend_optimization_level=2 --xla_force_host_platform_device_count=4"
    assert xla_flags.with_fast_compile(mine) == f"{mine} {emitters}"  # the user's level is kept
    assert xla_flags.without_fast_compile(xla_flags.with_fast_compile(mine)) == mine
    assert xla_flags.without_fast_compile(f"{level} --xla_dump_to=/tmp/x {emitters}") == "--xla_dump_to=/tmp/x"


def _in_a_new_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_lowerings_share_their_threads_mlir_context_for_n_programs_and_compute_the_same():
    from jax._src.interpreters import mlir

    assert getattr(mlir.make_ir_context, "reused", False), "tests/conftest.py applies mlir_contexts.reuse()"
    assert not mlir_contexts.reuse(), "applied twice"
    x = jnp.arange(3.0)
    real, seen = mlir.make_ir_context, []

    def three_programs():  # on a thread of their own: its first lowerings
        for scale in range(1, 4):
            np.testing.assert_array_equal(jax.jit(lambda x, s=scale: x * s + 1)(x), np.arange(3.0) * scale + 1)

    mlir.make_ir_context = lambda: seen.append(real()) or seen[-1]
    try:
        _in_a_new_thread(three_programs)
    finally:
        mlir.make_ir_context = real
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2], "one context for the thread's lowerings"
    assert _in_a_new_thread(real) is not seen[0], "another thread, another context"
    n = mlir_contexts.LOWERINGS_PER_CONTEXT
    many = _in_a_new_thread(lambda: [real() for _ in range(n + 1)])  # one context for n lowerings, then another
    assert len({id(context) for context in many[:n]}) == 1 and many[n] is not many[0]
