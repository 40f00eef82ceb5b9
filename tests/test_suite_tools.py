"""The suite's own helpers: the workers' file order (tests/file_order.py) and the XLA flags its processes get
(tests/xla_flags.py)."""
import pathlib
import types

import file_order
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
