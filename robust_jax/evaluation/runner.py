"""`run_suite`: the tasks of a suite (`robust_jax.evaluation.tasks`) over their data, chunk by chunk,
resumable when given a directory.

Each task (the attack entries together, `autoattack`, `corruptions`, each corrupted TFDS set, each shift
set) makes one pass over its data with `chunks.run_chunks`. With `store_root` (evaluate() passes
`<workdir>/eval`) finished chunks are saved and skipped on a re-run; without it nothing is written
(training-time evaluation). The result holds flat accuracies (`accuracy`) and each task's details.
"""
from __future__ import annotations

from typing import Dict, Optional

import jax

from robust_jax import data
from robust_jax.evaluation import bn_branch, suite as suite_lib, tasks
from robust_jax.evaluation.tasks.context import Context, Stores


def batches_per_chunk(cfg_eval) -> int:
    """`eval.chunk_size` examples per saved chunk (0: one eval batch); a multiple of `eval.batch_size`."""
    size, batch = int(cfg_eval.chunk_size or 0), int(cfg_eval.batch_size)
    if size == 0:
        return 1
    if size < 0 or size % batch:
        raise ValueError(f"eval.chunk_size={size} must be 0 (one batch) or a positive multiple of "
                         f"eval.batch_size={batch}")
    return size // batch


def run_suite_detailed(model, variables, config, mesh, *, suite: str, eps=None, split=None, num_examples=None,
                       desc: str = "eval", progress: bool = True, store_root: Optional[str] = None,
                       variables_id: str = "", num_classes: Optional[int] = None) -> dict:
    """Runs `suite` (see `robust_jax.evaluation.suite`) and returns
    {'accuracy': {entry: accuracy}, 'bn_branch': {entry: BN set used}, 'autoattack': ..., 'corruptions': ...,
     'corrupted_tfds': ..., 'shift_sets': ..., 'examples': {task: arrays}, 'directories': {task: directory}}.
    Dual-BN models run BN set `eval.bn` (shift sets: their own `bn`, default `eval.bn`; `bn_branch`)."""
    entries = suite_lib.parse_suite(suite)
    cfg = config.eval
    bn = cfg.bn
    view = bn_branch.view(model, bn)
    per_chunk = batches_per_chunk(cfg)
    identity = {"variables": variables_id, "batch_size": int(cfg.batch_size), "batches_per_chunk": per_chunk,
                "processes": jax.process_count()}
    if bn_branch.is_dual(model):
        identity["bn"] = bn
    ctx = Context(model=view, base_model=model, variables=variables, config=config, mesh=mesh, entries=entries,
                  split=split or cfg.split or config.data.eval_split,
                  num_examples=cfg.num_examples if num_examples is None else num_examples,
                  stores=Stores(store_root, identity), per_chunk=per_chunk,
                  num_classes=data.source_for(config.data).num_classes if num_classes is None else num_classes,
                  progress=progress, desc=desc, eps=eps)
    for name in tasks.plan(entries):
        tasks.TASKS[name].run(ctx)
    for name in ctx.out["accuracy"]:
        ctx.out["bn_branch"].setdefault(name, bn_branch.label(model, bn))
    return ctx.out


def run_suite(model, variables, config, mesh, *, suite: str, eps=None, split=None, num_examples=None,
              desc: str = "eval", progress: bool = True) -> Dict[str, float]:
    """Accuracy of `variables` under each entry of `suite` on `split` (default `eval.split`), nothing saved."""
    return run_suite_detailed(model, variables, config, mesh, suite=suite, eps=eps, split=split,
                              num_examples=num_examples, desc=desc, progress=progress)["accuracy"]
