"""What the picture tools (visual_words, advbn_features) share: their command line (the options --config,
--workdir, --num, --output and the way errors are reported) and what they read, a config file and a trained
run's method, variables and a batch of evaluation images."""
from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
from typing import Callable, Optional


class ToolError(Exception):
    """An error a tool's command line prints as `<tool>: error: <message>` and exits with `status`."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def command(tool: str):
    """Decorates a tool's `main(argv) -> int` so that a ToolError is printed and its status returned."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv=None) -> int:
            try:
                return main(argv)
            except ToolError as e:
                print(f"{tool}: error: {e}", file=sys.stderr)
                return e.status
        return run
    return wrap


def parser(tool: str, doc: str, method_label: str,
           num_help: str = "number of evaluation images") -> argparse.ArgumentParser:
    """`python -m robust_jax.tools.<tool>`'s parser (described by the first paragraph of `doc`) with the options
    every picture tool has; `method_label` names the method of the run in the help ('DAT', 'AdvBN')."""
    p = argparse.ArgumentParser(prog=f"python -m robust_jax.tools.{tool}", description=doc.split("\n\n")[0])
    p.add_argument("--config", required=True, help=f"a {method_label} config file[:arg] (the run's config)")
    p.add_argument("--workdir", required=True,
                   help=f"the {method_label} run's workdir (its latest checkpoint is used)")
    p.add_argument("--num", type=int, default=8, help=num_help)
    p.add_argument("--output", default="", help=f"PNG path (default: WORKDIR/{tool}.png)")
    return p


def load_config(spec: str, method: Optional[str] = None):
    """'configs/x.py[:arg]' -> the locked ConfigDict of that file (its repository's `configs` importable);
    with `method`, a config that trains another method raises ToolError (status 2)."""
    path, _, arg = spec.partition(":")
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:
        sys.path.insert(0, root)  # configs import `configs.common`
    module_spec = importlib.util.spec_from_file_location("_tool_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    if method is not None and config.method.name != method:
        raise ToolError(f"{spec} trains method {config.method.name!r}, not {method!r}", 2)
    return config


def load(config, workdir: str, num_examples: int):
    """(method, params, model_state, batch): the method object of `config`, the latest checkpoint's evaluation
    variables in `workdir` (ToolError, status 1, without one) and the first `num_examples` evaluation images."""
    from robust_jax import builders, data, evaluate, methods, parallel

    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    try:
        variables, _ = evaluate.load_eval_variables(config, workdir, run)
    except FileNotFoundError as e:
        raise ToolError(str(e), 1) from e
    method = methods.get(config.method, run.model, run.num_classes, steps_per_epoch=run.steps_per_epoch)
    batches, _ = data.eval_batches(config.data, config.data.eval_split, global_batch_size=num_examples, mesh=mesh,
                                   num_examples=num_examples)
    variables = dict(variables)
    params = variables.pop("params")
    return method, params, variables, next(batches)
