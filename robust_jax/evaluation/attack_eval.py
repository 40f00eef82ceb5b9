"""The attack entries (`clean`, `fgsm`, `pgd-K`, `cw-K`): one jitted step per batch computes them all.

All attacks use `eval.norm`, `eval.eps`, `eval.step_size` with the model in inference mode (running BN
statistics). eps and step size are traced arguments, so an accuracy-vs-eps curve compiles once.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict

import jax
import jax.numpy as jnp

from robust_jax import compile_options
from robust_jax.attacks import fgsm, pgd
from robust_jax.evaluation import chunks


def _clean(logits_fn, x, y, key, *, steps, settings):
    return x


def _pgd(loss):
    def run(logits_fn, x, y, key, *, steps, settings):
        return pgd(logits_fn, x, y, key, norm=settings["norm"], eps=settings["eps"],
                   step_size=settings["step_size"], steps=steps, loss=loss, random_start=True)
    return run


def _fgsm(logits_fn, x, y, key, *, steps, settings):
    return fgsm(logits_fn, x, y, norm=settings["norm"], eps=settings["eps"])


EVALUATORS: Dict[str, Callable] = {"clean": _clean, "fgsm": _fgsm, "pgd": _pgd("ce"), "cw": _pgd("cw")}


def threat_model(cfg_eval, eps=None) -> dict:
    """The attacks' settings from `eval`: norm, eps (`eps` when given: a point of the eps curve), step size."""
    return {"norm": cfg_eval.norm, "eps": float(cfg_eval.eps if eps is None else eps),
            "step_size": float(cfg_eval.step_size)}


@functools.lru_cache(maxsize=32)
def make_eval_step(model, entries: tuple, norm: str, num_examples: int = 0):
    """jit(variables, batch, key, eps, step_size) -> {name: number of correct real examples} for `entries`
    (a tuple of `suite.Entry`); with
    `num_examples` > 0 also `examples` = {name: (images, predictions)} of the batch's first examples."""

    def step(variables, batch, key, eps, step_size):
        logits_fn = lambda x: model.apply(variables, x, train=False)
        x, y, mask = batch["image"], batch["label"], batch["mask"]
        settings = {"norm": norm, "eps": eps, "step_size": step_size}
        out, examples = {}, {}
        for i, e in enumerate(entries):
            x_eval = EVALUATORS[e.kind](logits_fn, x, y, jax.random.fold_in(key, i), steps=e.steps, settings=settings)
            pred = jnp.argmax(logits_fn(x_eval), -1)
            out[e.name] = jnp.sum(mask * (pred == y))
            if num_examples:
                examples[e.name] = (x_eval[:num_examples], pred[:num_examples])
        if num_examples:
            out["examples"] = examples
        return out

    return compile_options.jit(step)


def compute_fn(model, variables, entries, settings, key, *, examples_store=None, num_examples: int = 0):
    """`compute(chunk, first_batch, batches)` for `chunks.run_chunks`: counts per attack entry; the first
    chunk's first examples (clean and attacked images, predictions) go to `examples_store`."""
    entries = tuple(entries)
    step = make_eval_step(model, entries, settings["norm"], num_examples if examples_store is not None else 0)
    eps, step_size = jnp.float32(settings["eps"]), jnp.float32(settings["step_size"])

    def compute(chunk, first, batches):
        counts = {e.name: 0 for e in entries}
        n = 0
        for j, batch in enumerate(batches):
            b = first + j
            out = step(variables, batch, jax.random.fold_in(key, b), eps, step_size)
            ex = out.pop("examples", None)
            if ex is not None and b == 0:
                arrays = {"labels": chunks.host(batch["label"])[:num_examples]}
                for name, (img, pred) in ex.items():
                    arrays[f"{name}:images"], arrays[f"{name}:pred"] = chunks.host(img), chunks.host(pred)
                examples_store.save_arrays("examples", arrays)
            out = jax.device_get(out)
            n += int(round(float(chunks.host(batch["mask"]).sum())))
            for name in counts:
                counts[name] += int(out[name])
        return {"n": n, "correct": counts}

    return compute
