"""`run_suite`: every entry of a suite over its data, chunk by chunk, resumable when given a directory.

Each task (the attack entries together, `autoattack`, `corruptions`, each corrupted TFDS set, each shift
set) makes one pass over its data with `chunks.run_chunks`. With `store_root` (evaluate() passes
`<workdir>/eval`) finished chunks are saved and skipped on a re-run; without it nothing is written
(training-time evaluation). The result holds flat accuracies (`accuracy`) and each task's details.
"""
from __future__ import annotations

from typing import Dict, Optional

import jax
import ml_collections

from robust_jax import data
from robust_jax.evaluation import (attack_eval, autoattack_eval, bn_branch, chunks, corruption_eval, forward_eval,
                                   mce, shift_sets, suite as suite_lib)


def threat_model(cfg_eval, eps=None) -> dict:
    return {"norm": cfg_eval.norm, "eps": float(cfg_eval.eps if eps is None else eps),
            "step_size": float(cfg_eval.step_size)}


def batches_per_chunk(cfg_eval) -> int:
    """`eval.chunk_size` examples per saved chunk (0: one eval batch); a multiple of `eval.batch_size`."""
    size, batch = int(cfg_eval.get("chunk_size", 0) or 0), int(cfg_eval.batch_size)
    if size == 0:
        return 1
    if size < 0 or size % batch:
        raise ValueError(f"eval.chunk_size={size} must be 0 (one batch) or a positive multiple of "
                         f"eval.batch_size={batch}")
    return size // batch


def data_record(cfg_data, split: str, num_examples) -> dict:
    """What the numbers of a data set depend on: source, split, size, preprocessing."""
    return {"name": cfg_data.name, "split": split, "num_examples": num_examples or "all",
            "subset": cfg_data.get("eval_subset", "first") if num_examples else "all",
            "preprocess": cfg_data.eval_preprocess, "image_size": cfg_data.get("image_size") or "native",
            "data_dir": cfg_data.get("data_dir") or ""}


class _Stores:
    """Makes one ChunkStore per task under `root` (or in-memory stores when root is None)."""

    def __init__(self, root: Optional[str], base_identity: dict):
        self.root, self.base = root, base_identity

    def get(self, name: str, **identity):
        if self.root is None:
            return chunks.MemoryStore()
        return chunks.ChunkStore(self.root, name, {**self.base, **identity})


def run_suite_detailed(model, variables, config, mesh, *, suite: str, eps=None, split=None, num_examples=None,
                       desc: str = "eval", progress: bool = True, store_root: Optional[str] = None,
                       variables_id: str = "", num_classes: Optional[int] = None) -> dict:
    """Runs `suite` (see `robust_jax.evaluation.suite`) and returns
    {'accuracy': {entry: accuracy}, 'bn_branch': {entry: BN set used}, 'autoattack': ..., 'corruptions': ...,
     'corrupted_tfds': ..., 'shift_sets': ..., 'examples': {task: arrays}, 'directories': {task: directory}}.
    Dual-BN models run BN set `eval.bn` (shift sets: their own `bn`, default `eval.bn`; `bn_branch`)."""
    entries = suite_lib.parse_suite(suite)
    cfg = config.eval
    bn = cfg.get("bn", "clean")
    base_model, model = model, bn_branch.view(model, bn)
    split = split or cfg.get("split") or config.data.eval_split
    n_ex = cfg.get("num_examples") if num_examples is None else num_examples
    per_chunk = batches_per_chunk(cfg)
    k_examples = int(cfg.get("num_example_images", 6))
    base_identity = {"variables": variables_id, "batch_size": int(cfg.batch_size), "batches_per_chunk": per_chunk,
                     "processes": jax.process_count()}
    if bn_branch.is_dual(base_model):
        base_identity["bn"] = bn
    stores = _Stores(store_root, base_identity)
    record = data_record(config.data, split, n_ex)
    if num_classes is None:
        num_classes = data.source_for(config.data).num_classes

    def batches_of(cfg_data, split_):
        return data.eval_batches(cfg_data, split_, global_batch_size=cfg.batch_size, mesh=mesh, num_examples=n_ex)

    out = {"accuracy": {}, "bn_branch": {}, "examples": {}, "directories": {}}
    seed = int(cfg.get("seed", 0))

    def finish(task, store):
        out["directories"][task] = store.directory
        arrays = store.load_arrays("examples")
        if arrays is not None:
            out["examples"][task] = arrays

    # attack entries: one compiled step per batch computes them all
    attack_entries = [e for e in entries if e.is_attack]
    if attack_entries:
        tm = threat_model(cfg, eps)
        names = [e.name for e in attack_entries]
        task = "attacks" if eps is None else f"curve-eps{tm['eps']:.6g}"
        store = stores.get(task, data=record, entries=names, threat_model=tm, seed=seed)
        compute = attack_eval.compute_fn(model, variables, attack_entries, tm, jax.random.key(seed),
                                         examples_store=store if eps is None else None, num_examples=k_examples)
        it, nb = batches_of(config.data, split)
        total = chunks.run_chunks(it, nb, batches_per_chunk=per_chunk, store=store, compute=compute, desc=desc,
                                  progress=progress,
                                  postfix=lambda t: {k: f"{v / max(t['n'], 1):.3f}" for k, v in t["correct"].items()})
        for name in names:
            out["accuracy"][name] = total["correct"][name] / total["n"]
        out["num_examples"] = total["n"]
        finish(task, store)

    for e in entries:
        if e.kind == "autoattack":
            s = autoattack_eval.settings(cfg)
            store = stores.get("autoattack", data=record, settings=s)
            attack = autoattack_eval.make_attack(model, s, mesh=mesh, progress=progress)
            compute = autoattack_eval.compute_fn(attack, variables, examples_store=store, num_examples=k_examples)
            it, nb = batches_of(config.data, split)
            total = chunks.run_chunks(it, nb, batches_per_chunk=per_chunk, store=store, compute=compute,
                                      desc="autoattack", progress=progress, postfix=autoattack_eval.postfix)
            out["autoattack"] = {**autoattack_eval.summarise(total, s), "data": record}
            out["accuracy"]["autoattack"] = out["autoattack"]["robust_accuracy"]
            finish("autoattack", store)
        elif e.kind == "corruptions":
            s = corruption_eval.settings(cfg)
            store = stores.get("corruptions", data=record, settings=s)
            compute = corruption_eval.compute_fn(model, variables, s, examples_store=store, num_examples=k_examples,
                                                 progress=progress)
            it, nb = batches_of(config.data, split)
            total = chunks.run_chunks(it, nb, batches_per_chunk=per_chunk, store=store, compute=compute,
                                      desc=f"corruptions ({len(s['names'])} x {len(s['severities'])})",
                                      progress=progress)
            err = corruption_eval.errors(total)
            out["corruptions"] = {"settings": {**s, "names": list(s["names"]), "severities": list(s["severities"])},
                                  "data": record, "num_examples": total["n"], "errors": err,
                                  "metrics": mce.summarise(err, 1 - total["clean"] / total["n"],
                                                           alexnet=num_classes == 1000)}
            out["accuracy"]["corruptions"] = out["corruptions"]["metrics"]["mean_corruption_accuracy"]
            finish("corruptions", store)
        elif e.kind == "corrupted_tfds":
            s = corruption_eval.settings(cfg)
            sets = corruption_eval.tfds_datasets(config, s)
            err = {}
            for c, sev, full, tsplit in sets:
                pre = cfg.corruptions.get("tfds_preprocess") or config.data.eval_preprocess
                cfg_data = _data_copy(config.data, name=full, num_classes=0, eval_preprocess=pre)
                rec = data_record(cfg_data, tsplit, n_ex)
                store = stores.get(f"tfds-{c}-{sev}", data=rec)
                compute = forward_eval.compute_fn(model, variables, num_classes=num_classes)
                it, nb = batches_of(cfg_data, tsplit)
                total = chunks.run_chunks(it, nb, batches_per_chunk=per_chunk, store=store, compute=compute,
                                          desc=f"{full}", progress=progress)
                err.setdefault(c, {})[str(sev)] = 1 - total["correct"] / total["n"]
            clean = out["accuracy"].get("clean")  # the clean error of the uncorrupted split, if in the suite
            out["corrupted_tfds"] = {"builder": corruption_eval.tfds_builder_name(config), "data": record,
                                     "errors": err, "metrics": mce.summarise(
                                         err, None if clean is None else 1 - clean, alexnet=num_classes == 1000)}
            out["accuracy"]["corrupted_tfds"] = out["corrupted_tfds"]["metrics"]["mean_corruption_accuracy"]
        elif e.kind == "shift_sets":
            out["shift_sets"] = _run_shift_sets(base_model, variables, config, stores, batches_of, per_chunk,
                                                num_classes, n_ex, k_examples, progress, out)
            for label, r in out["shift_sets"].items():
                out["accuracy"][f"shift:{label}"] = r["accuracy"]
                out["bn_branch"][f"shift:{label}"] = r["bn"]
    for name in out["accuracy"]:
        out["bn_branch"].setdefault(name, bn_branch.label(base_model, bn))
    return out


def _data_copy(cfg_data, **fields):
    c = ml_collections.ConfigDict(cfg_data.to_dict())
    c.update(fields)
    return c


def _run_shift_sets(model, variables, config, stores, batches_of, per_chunk, num_classes, n_ex, k_examples,
                    progress, out) -> Dict[str, dict]:
    specs = shift_sets.parse(config.eval.get("shift_sets"))
    if not specs:
        raise ValueError("the suite has 'shift_sets' but eval.shift_sets is empty: add {label: source or dict}")
    wnids = None
    results = {}
    default_bn = config.eval.get("bn", "clean")
    for label, spec in specs.items():
        bn = spec["bn"] or default_bn
        branch_model = bn_branch.view(model, bn, where=f"eval.shift_sets.{label}.bn")
        fields = {"name": spec["source"], "num_classes": 0}
        if spec["preprocess"]:
            fields["eval_preprocess"] = spec["preprocess"]
        if spec["image_size"]:
            fields["image_size"] = int(spec["image_size"])
        cfg_data = _data_copy(config.data, **fields)
        src = data.source_for(cfg_data)
        names = shift_sets.class_names(src)
        if spec["labels"] != "identity" and names is None:
            raise ValueError(f"eval.shift_sets.{label}: labels={spec['labels']!r} needs class names, which "
                             f"{spec['source']!r} does not have")
        if spec["labels"] == "wnid" and wnids is None:
            wnids = shift_sets.read_wnids(config.eval.get("wnids_file") or None)
        lmap = shift_sets.label_map(names if names is not None else range(src.num_classes), spec["labels"],
                                    num_classes=num_classes, wnids=wnids)
        per_split = {}
        splits = shift_sets.resolve_splits(spec, src.splits)
        for split in splits:
            mask = None
            if spec["mask"] == "present":
                mask = shift_sets.class_mask(lmap[shift_sets.present_labels(src, split)], num_classes)
            rec = {**data_record(cfg_data, split, n_ex), "labels": spec["labels"], "mask": spec["mask"],
                   "classes": int(mask.sum()) if mask is not None else num_classes, "bn": bn_branch.label(model, bn)}
            task = f"shift-{label}" + (f"-{split}" if spec["splits"] else "")
            store = stores.get(task, data=rec)
            compute = forward_eval.compute_fn(branch_model, variables, num_classes=num_classes, label_map=lmap,
                                              class_mask=mask, examples_store=store, num_examples=k_examples)
            it, nb = batches_of(cfg_data, split)
            total = chunks.run_chunks(it, nb, batches_per_chunk=per_chunk, store=store, compute=compute,
                                      desc=f"shift {label}" + (f" {split}" if spec["splits"] else ""),
                                      progress=progress)
            per_split[split] = {**rec, "accuracy": total["correct"] / total["n"], "num_examples": total["n"]}
            out["directories"][task] = store.directory
        if not spec["splits"]:
            results[label] = per_split[splits[0]]
            continue
        results[label] = {**per_split[splits[0]], "split": f"mean of {len(splits)}",
                          "accuracy": sum(r["accuracy"] for r in per_split.values()) / len(splits),
                          "num_examples": sum(r["num_examples"] for r in per_split.values()),
                          "splits": {s: r["accuracy"] for s, r in per_split.items()}}
    return results


def run_suite(model, variables, config, mesh, *, suite: str, eps=None, split=None, num_examples=None,
              desc: str = "eval", progress: bool = True) -> Dict[str, float]:
    """Accuracy of `variables` under each entry of `suite` on `split` (default `eval.split`), nothing saved."""
    return run_suite_detailed(model, variables, config, mesh, suite=suite, eps=eps, split=split,
                              num_examples=num_examples, desc=desc, progress=progress)["accuracy"]
