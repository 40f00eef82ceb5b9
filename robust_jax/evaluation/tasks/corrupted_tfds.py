"""The `corrupted_tfds` entry: the corruption numbers from the prepared TFDS builders (`cifar10_corrupted`,
`imagenet2012_corrupted`), each corruption and severity a data set evaluated clean (`forward_eval`). The
relative mCE uses the `clean` accuracy of the same suite when it has that entry."""
from __future__ import annotations

from robust_jax.evaluation import corruption_eval, forward_eval, mce

ENTRIES = ("corrupted_tfds",)


def run(ctx) -> None:
    s = corruption_eval.settings(ctx.cfg)
    err = {}
    for c, sev, full, split in corruption_eval.tfds_datasets(ctx.config, s):
        pre = ctx.cfg.corruptions.tfds_preprocess or ctx.config.data.eval_preprocess
        cfg_data = ctx.data_config(name=full, num_classes=0, eval_preprocess=pre)
        store = ctx.stores.get(f"tfds-{c}-{sev}", data=ctx.record(cfg_data, split))
        compute = forward_eval.compute_fn(ctx.model, ctx.variables, num_classes=ctx.num_classes)
        total = ctx.run_chunks(store, compute, full, cfg_data=cfg_data, split=split)
        err.setdefault(c, {})[str(sev)] = 1 - total["correct"] / total["n"]
    clean = ctx.out["accuracy"].get("clean")
    ctx.out["corrupted_tfds"] = {"builder": corruption_eval.tfds_builder_name(ctx.config), "data": ctx.record(),
                                 "errors": err, "metrics": mce.summarise(
                                     err, None if clean is None else 1 - clean, alexnet=ctx.num_classes == 1000)}
    ctx.out["accuracy"]["corrupted_tfds"] = ctx.out["corrupted_tfds"]["metrics"]["mean_corruption_accuracy"]
