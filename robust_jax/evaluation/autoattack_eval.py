"""The `autoattack` entry: `robust_jax.attacks.autoattack.AutoAttack` run chunk by chunk.

Settings come from `config.eval.autoattack`: version ('standard' | 'plus' | 'rand'), norm and eps
('' / 0 mean `eval.norm` / `eval.eps`), seed, batch_size (the attack's batch; a chunk of
`eval.chunk_size` examples is cut into such batches). Each chunk records the number of points, the
clean-correct ones, the robust ones after each attack of the ensemble and the seconds it took, so the
report gives the per-attack robust accuracy of the whole set.
"""
from __future__ import annotations

import logging

import numpy as np

from robust_jax.evaluation import chunks

log = logging.getLogger(__name__)  # the driver's per-batch lines, at DEBUG: the progress bars show the state


def settings(cfg_eval) -> dict:
    """The resolved AutoAttack settings (norm/eps default to the eval threat model)."""
    aa = cfg_eval.autoattack
    out = {"version": aa.version, "norm": aa.norm or cfg_eval.norm, "eps": float(aa.eps or cfg_eval.eps),
           "seed": int(aa.seed), "batch_size": int(aa.batch_size)}
    if out["version"] not in ("standard", "plus", "rand"):
        raise ValueError(f"eval.autoattack.version must be 'standard', 'plus' or 'rand', got {out['version']!r}")
    return out


def make_attack(model, s: dict, *, mesh=None, progress: bool = True):
    from robust_jax.attacks.autoattack import AutoAttack

    if s["version"] == "rand":
        raise ValueError("eval.autoattack.version='rand' needs a randomised model apply_fn(variables, x, key); "
                         "the models of this library are deterministic at inference: use 'standard'")
    apply_fn = lambda variables, x: model.apply(variables, x, train=False)
    return AutoAttack(apply_fn, norm=s["norm"], eps=s["eps"], version=s["version"], seed=s["seed"],
                      batch_size=s["batch_size"], mesh=mesh, log=log.debug, progress=progress)


def compute_fn(attack, variables, *, examples_store=None, num_examples: int = 0):
    """`compute(chunk, first_batch, batches)` for `chunks.run_chunks`."""

    def compute(chunk, first, batches):
        x = np.concatenate([chunks.host(b["image"]) for b in batches])
        y = np.concatenate([chunks.host(b["label"]) for b in batches])
        real = np.concatenate([chunks.host(b["mask"]) for b in batches]) > 0
        x, y = x[real], y[real]
        res = attack.run(variables, x, y)
        n = len(y)
        if examples_store is not None and num_examples and chunk == 0:
            k = min(num_examples, n)
            examples_store.save_arrays("examples", {
                "labels": y[:k], "clean:images": x[:k], "clean:pred": attack.predict(variables, x[:k]),
                "autoattack:images": res.x_adv[:k], "autoattack:pred": attack.predict(variables, res.x_adv[:k])})
        return {"n": n, "clean": int(res.clean_correct.sum()), "robust": int(res.robust.sum()),
                "per_attack": {name: int(round(acc * n)) for name, acc in res.per_attack.items()},
                "seconds": float(res.seconds)}

    return compute


def postfix(total: dict) -> dict:
    return {"points": total["n"], "clean": total["clean"], "robust": total["robust"]}


def summarise(total: dict, s: dict) -> dict:
    n = max(total["n"], 1)
    return {**s, "num_examples": total["n"], "clean_accuracy": total["clean"] / n,
            "robust_accuracy": total["robust"] / n,
            "per_attack": {name: c / n for name, c in total["per_attack"].items()}, "seconds": total["seconds"]}
