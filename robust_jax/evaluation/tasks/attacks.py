"""The attack entries `clean`, `fgsm`, `pgd-K`, `cw-K` as one task: one compiled step per batch computes them
all (`attack_eval`). With `ctx.eps` set it is one point of the accuracy-vs-eps curve, kept in a store of its
own and without example images."""
from __future__ import annotations

import jax

from robust_jax.evaluation import attack_eval

ENTRIES = tuple(attack_eval.EVALUATORS)
STEPPED = ("pgd", "cw")


def _running_accuracies(total: dict) -> dict:
    return {k: f"{v / max(total['n'], 1):.3f}" for k, v in total["correct"].items()}


def run(ctx) -> None:
    entries = [e for e in ctx.entries if e.kind in ENTRIES]
    tm = attack_eval.threat_model(ctx.cfg, ctx.eps)
    names = [e.name for e in entries]
    task = "attacks" if ctx.eps is None else f"curve-eps{tm['eps']:.6g}"
    store = ctx.stores.get(task, data=ctx.record(), entries=names, threat_model=tm, seed=ctx.seed)
    compute = attack_eval.compute_fn(ctx.model, ctx.variables, entries, tm, jax.random.key(ctx.seed),
                                     examples_store=store if ctx.eps is None else None,
                                     num_examples=ctx.num_example_images)
    total = ctx.run_chunks(store, compute, ctx.desc, postfix=_running_accuracies)
    for name in names:
        ctx.out["accuracy"][name] = total["correct"][name] / total["n"]
    ctx.out["num_examples"] = total["n"]
    ctx.keep(task, store)
