"""Robustness evaluation: a suite of named evaluators run over a split, written as a report.

Suite entries (comma-separated in `config.eval.suite`): `clean`, `fgsm`, `pgd-K` (K steps of PGD on
cross-entropy, random start), `cw-K` (K steps of PGD on the CW margin loss). All attacks use
`eval.norm`, `eval.eps`, `eval.step_size` with the model in inference mode (running BN statistics).
`eval.curve_eps` adds accuracy-vs-eps under `eval.curve_attack`. More evaluators (AutoAttack,
corruptions) register in `EVALUATORS`.
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Callable, Dict

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from robust_jax import builders, data, parallel
from robust_jax.attacks import fgsm, pgd
from robust_jax.checkpoint import Checkpoints
from robust_jax.models import variables_io


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


def parse_suite(suite: str):
    """'clean,pgd-20,cw-20' -> [('clean', 'clean', 0), ('pgd-20', 'pgd', 20), ...]."""
    entries = []
    for name in [s.strip() for s in suite.split(",") if s.strip()]:
        m = re.fullmatch(r"([a-z_]+)(?:-(\d+))?", name)
        if not m or m.group(1) not in EVALUATORS:
            raise ValueError(f"unknown evaluator {name!r} in eval suite; known: {sorted(EVALUATORS)} "
                             "(attacks take a step count, e.g. pgd-20)")
        kind, steps = m.group(1), int(m.group(2) or 0)
        if kind in ("pgd", "cw") and steps <= 0:
            raise ValueError(f"{name!r}: give the number of steps, e.g. {kind}-20")
        entries.append((name, kind, steps))
    return entries


def _settings(cfg_eval, eps=None):
    return {"norm": cfg_eval.norm, "eps": cfg_eval.eps if eps is None else eps, "step_size": cfg_eval.step_size}


@functools.lru_cache(maxsize=32)
def make_eval_step(model, entries: tuple, norm: str):
    """jit(variables, batch, key, eps, step_size) -> {name: number of correct real examples}.
    eps and step_size are traced, so an accuracy-vs-eps curve compiles once; cached per suite."""

    def step(variables, batch, key, eps, step_size):
        logits_fn = lambda x: model.apply(variables, x, train=False)
        x, y, mask = batch["image"], batch["label"], batch["mask"]
        settings = {"norm": norm, "eps": eps, "step_size": step_size}
        out = {}
        for i, (name, kind, steps) in enumerate(entries):
            x_eval = EVALUATORS[kind](logits_fn, x, y, jax.random.fold_in(key, i), steps=steps, settings=settings)
            out[name] = jnp.sum(mask * (jnp.argmax(logits_fn(x_eval), -1) == y))
        return out

    return jax.jit(step)


def run_suite(model, variables, config, mesh, *, suite: str, eps=None, split=None, num_examples=None,
              desc: str = "eval", progress: bool = True) -> Dict[str, float]:
    """Accuracy of `variables` under each evaluator of `suite` on `split` (default `eval.split`)."""
    entries = parse_suite(suite)
    cfg = config.eval
    split = split or cfg.get("split") or config.data.eval_split
    batches, n_batches = data.eval_batches(config.data, split, global_batch_size=cfg.batch_size, mesh=mesh,
                                           num_examples=cfg.get("num_examples") if num_examples is None else num_examples)
    settings = _settings(cfg, eps)
    step = make_eval_step(model, tuple(entries), settings["norm"])
    eps_, step_size = jnp.float32(settings["eps"]), jnp.float32(settings["step_size"])
    key = jax.random.key(cfg.get("seed", 0))
    correct = {name: 0.0 for name, _, _ in entries}
    total = 0.0
    bar = tqdm(batches, total=n_batches, desc=desc, disable=not progress or jax.process_index() != 0, leave=False)
    for i, batch in enumerate(bar):
        counts = jax.device_get(step(variables, batch, jax.random.fold_in(key, i), eps_, step_size))
        total += float(jax.device_get(jnp.sum(batch["mask"])))
        for name in correct:
            correct[name] += float(counts[name])
        bar.set_postfix({name: f"{correct[name] / max(total, 1):.3f}" for name in correct})
    return {name: correct[name] / total for name in correct}


def load_eval_variables(config, workdir, run):
    """Variables to evaluate: `eval.checkpoint` (a variables file, e.g. converted from PyTorch) when
    set, else the latest training checkpoint in `workdir`."""
    if config.eval.get("checkpoint"):
        template = jax.eval_shape(lambda: run.state.eval_variables(use_ema=False))
        return variables_io.load_variables(config.eval.checkpoint, template), config.eval.checkpoint
    ckpts = Checkpoints(workdir)
    if ckpts.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {ckpts.directory} and no eval.checkpoint set: train first "
                                "(--mode train) or point --config.eval.checkpoint at a variables file")
    state = ckpts.restore_weights(run.state)
    ckpts.close()
    return state.eval_variables(config.eval.get("use_ema", True)), f"{ckpts.directory} (step {int(state.step)})"


def evaluate(config, workdir: str) -> dict:
    """Runs the configured suite (and eps curve) and writes report.json / report.md / plots in workdir."""
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    variables, source = load_eval_variables(config, workdir, run)
    variables = parallel.replicate(variables, mesh)
    results = run_suite(run.model, variables, config, mesh, suite=config.eval.suite)
    curve = []
    for eps in config.eval.get("curve_eps", ()):
        acc = run_suite(run.model, variables, config, mesh, suite=config.eval.curve_attack, eps=eps,
                        desc=f"eps={eps:.4g}")
        curve.append((float(eps), acc[config.eval.curve_attack]))
    report = make_report(config, results, curve, source)
    if jax.process_index() == 0:
        write_report(report, workdir)
    return report


def make_report(config, results, curve, source) -> dict:
    cfg = config.eval
    return {
        "model": config.model.name,
        "method": config.method.name,
        "variables": source,
        "data": {"name": config.data.name, "split": cfg.get("split") or config.data.eval_split,
                 "num_examples": cfg.get("num_examples") or "all", "preprocess": config.data.eval_preprocess},
        "threat_model": _settings(cfg),
        "accuracy": results,
        "curve": {"attack": cfg.get("curve_attack", ""), "points": curve},
    }


def write_report(report: dict, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    tm = report["threat_model"]
    lines = [f"# Robustness report: {report['model']} ({report['method']})", "",
             f"Variables: `{report['variables']}`  ",
             f"Data: {report['data']['name']} / {report['data']['split']} ({report['data']['num_examples']} examples, "
             f"preprocess `{report['data']['preprocess']}`)  ",
             f"Threat model: {tm['norm']} eps={tm['eps']:.5g}, step {tm['step_size']:.5g}", "",
             "| evaluator | accuracy (%) |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.2f} |" for k, v in report["accuracy"].items()]
    if report["curve"]["points"]:
        from robust_jax import plots

        path = plots.accuracy_vs_eps(report["curve"]["points"], report["curve"]["attack"],
                                     os.path.join(workdir, "accuracy_vs_eps.png"))
        lines += ["", f"![accuracy vs eps]({os.path.basename(path)})", "",
                  "| eps | accuracy (%) |", "|---|---|"]
        lines += [f"| {e:.4g} | {100 * a:.2f} |" for e, a in report["curve"]["points"]]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
