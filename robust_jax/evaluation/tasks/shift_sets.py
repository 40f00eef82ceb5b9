"""The `shift_sets` entry: top-1 on every set of `eval.shift_sets` (specs, label maps and class masks in
`evaluation.shift_sets`), each with its own BN set on dual-BN models; a set given several splits reports
the mean of their accuracies. The accuracy of set `label` is `shift:<label>`."""
from __future__ import annotations

import functools
from typing import Callable

from robust_jax import data
from robust_jax.evaluation import bn_branch, forward_eval
from robust_jax.evaluation import shift_sets as specs

ENTRIES = ("shift_sets",)


def run(ctx) -> None:
    sets = specs.parse(ctx.cfg.shift_sets)
    if not sets:
        raise ValueError("the suite has 'shift_sets' but eval.shift_sets is empty: add {label: source or dict}")
    wnids = functools.lru_cache(maxsize=None)(lambda: specs.read_wnids(ctx.cfg.wnids_file or None))
    results = {label: _one_set(ctx, label, spec, wnids) for label, spec in sets.items()}
    ctx.out["shift_sets"] = results
    for label, r in results.items():
        ctx.out["accuracy"][f"shift:{label}"] = r["accuracy"]
        ctx.out["bn_branch"][f"shift:{label}"] = r["bn"]


def _one_set(ctx, label: str, spec: dict, wnids: Callable[[], list]) -> dict:
    """The result of one set; `wnids()` reads the ImageNet wnid list (once per suite), for labels='wnid'."""
    model = ctx.base_model
    bn = spec["bn"] or ctx.cfg.bn
    branch_model = bn_branch.view(model, bn, where=f"eval.shift_sets.{label}.bn")
    fields = {"name": spec["source"], "num_classes": 0}
    if spec["preprocess"]:
        fields["eval_preprocess"] = spec["preprocess"]
    if spec["image_size"]:
        fields["image_size"] = int(spec["image_size"])
    cfg_data = ctx.data_config(**fields)
    src = data.source_for(cfg_data)
    names = specs.class_names(src)
    if spec["labels"] != "identity" and names is None:
        raise ValueError(f"eval.shift_sets.{label}: labels={spec['labels']!r} needs class names, which "
                         f"{spec['source']!r} does not have")
    lmap = specs.label_map(names if names is not None else range(src.num_classes), spec["labels"],
                           num_classes=ctx.num_classes, wnids=wnids() if spec["labels"] == "wnid" else None)
    per_split = {}
    splits = specs.resolve_splits(spec, src.splits)
    for split in splits:
        mask = None
        if spec["mask"] == "present":
            mask = specs.class_mask(lmap[specs.present_labels(src, split)], ctx.num_classes)
        rec = {**ctx.record(cfg_data, split), "labels": spec["labels"], "mask": spec["mask"],
               "classes": int(mask.sum()) if mask is not None else ctx.num_classes, "bn": bn_branch.label(model, bn)}
        task = f"shift-{label}" + (f"-{split}" if spec["splits"] else "")
        store = ctx.stores.get(task, data=rec)
        compute = forward_eval.compute_fn(branch_model, ctx.variables, num_classes=ctx.num_classes, label_map=lmap,
                                          class_mask=mask, examples_store=store,
                                          num_examples=ctx.num_example_images)
        total = ctx.run_chunks(store, compute, f"shift {label}" + (f" {split}" if spec["splits"] else ""),
                               cfg_data=cfg_data, split=split)
        per_split[split] = {**rec, "accuracy": total["correct"] / total["n"], "num_examples": total["n"]}
        ctx.out["directories"][task] = store.directory
    if not spec["splits"]:
        return per_split[splits[0]]
    return {**per_split[splits[0]], "split": f"mean of {len(splits)}",
            "accuracy": sum(r["accuracy"] for r in per_split.values()) / len(splits),
            "num_examples": sum(r["num_examples"] for r in per_split.values()),
            "splits": {s: r["accuracy"] for s, r in per_split.items()}}
