"""The `corruptions` entry: the eval data corrupted on the fly (`corruption_eval`), the error per corruption
and severity, CE and mCE (`mce`); its accuracy is the mean corruption accuracy."""
from __future__ import annotations

from robust_jax.evaluation import corruption_eval, mce

ENTRIES = ("corruptions",)


def run(ctx) -> None:
    s = corruption_eval.settings(ctx.cfg)
    record = ctx.record()
    store = ctx.stores.get("corruptions", data=record, settings=s)
    compute = corruption_eval.compute_fn(ctx.model, ctx.variables, s, examples_store=store,
                                         num_examples=ctx.num_example_images, progress=ctx.progress)
    total = ctx.run_chunks(store, compute, f"corruptions ({len(s['names'])} x {len(s['severities'])})")
    err = corruption_eval.errors(total)
    ctx.out["corruptions"] = {"settings": {**s, "names": list(s["names"]), "severities": list(s["severities"])},
                              "data": record, "num_examples": total["n"], "errors": err,
                              "metrics": mce.summarise(err, 1 - total["clean"] / total["n"],
                                                       alexnet=ctx.num_classes == 1000)}
    ctx.out["accuracy"]["corruptions"] = ctx.out["corruptions"]["metrics"]["mean_corruption_accuracy"]
    ctx.keep("corruptions", store)
