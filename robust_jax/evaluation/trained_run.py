"""What the picture tools (visual_words, advbn_features) read: a config file and a trained run's method,
variables and a batch of evaluation images."""
from __future__ import annotations

import importlib.util
import os
import sys


def load_config(spec: str):
    """'configs/x.py[:arg]' -> the locked ConfigDict of that file (its repository's `configs` importable)."""
    path, _, arg = spec.partition(":")
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:
        sys.path.insert(0, root)  # configs import `configs.common`
    module_spec = importlib.util.spec_from_file_location("_tool_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def load(config, workdir: str, num_examples: int):
    """(method, params, model_state, batch): the method object of `config`, the latest checkpoint's evaluation
    variables in `workdir` (FileNotFoundError without one) and the first `num_examples` evaluation images."""
    from robust_jax import builders, data, evaluate, methods, parallel

    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    variables, _ = evaluate.load_eval_variables(config, workdir, run)
    method = methods.get(config.method, run.model, run.num_classes)
    batches, _ = data.eval_batches(config.data, config.data.eval_split, global_batch_size=num_examples, mesh=mesh,
                                   num_examples=num_examples)
    variables = dict(variables)
    params = variables.pop("params")
    return method, params, variables, next(batches)
