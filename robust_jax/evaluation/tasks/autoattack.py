"""The `autoattack` entry: AutoAttack (`autoattack_eval`) over the eval data chunk by chunk; its section holds
the settings, the clean and robust accuracy and the robust accuracy after each attack of the ensemble."""
from __future__ import annotations

from robust_jax.evaluation import autoattack_eval

ENTRIES = ("autoattack",)


def run(ctx) -> None:
    s = autoattack_eval.settings(ctx.cfg)
    record = ctx.record()
    store = ctx.stores.get("autoattack", data=record, settings=s)
    attack = autoattack_eval.make_attack(ctx.model, s, mesh=ctx.mesh, progress=ctx.progress)
    compute = autoattack_eval.compute_fn(attack, ctx.variables, examples_store=store,
                                         num_examples=ctx.num_example_images)
    total = ctx.run_chunks(store, compute, "autoattack", postfix=autoattack_eval.postfix)
    ctx.out["autoattack"] = {**autoattack_eval.summarise(total, s), "data": record}
    ctx.out["accuracy"]["autoattack"] = ctx.out["autoattack"]["robust_accuracy"]
    ctx.keep("autoattack", store)
