"""The report of an evaluation: `report.json` (every number with the data, preprocessing and settings it
was computed with), `report.md` (tables) and plots (accuracy vs eps, corruption-error heat-map, example
images with predictions)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from robust_jax.evaluation import chunks

DETAIL_KEYS = ("autoattack", "corruptions", "corrupted_tfds", "shift_sets")


def make_report(config, results, curve, source, details: Optional[dict] = None) -> dict:
    """The report dict: `results` {entry: accuracy}, `curve` [(eps, accuracy)], `source` where the variables
    came from, `details` the per-task sections of `run_suite_detailed` (optional)."""
    cfg = config.eval
    report = {
        "model": config.model.name,
        "method": config.method.name,
        "variables": source,
        "data": {"name": config.data.name, "split": cfg.split or config.data.eval_split,
                 "num_examples": cfg.num_examples or "all", "preprocess": config.data.eval_preprocess,
                 "image_size": config.data.image_size or "native"},
        "threat_model": {"norm": cfg.norm, "eps": float(cfg.eps), "step_size": float(cfg.step_size)},
        "accuracy": dict(results),
        "bn_branch": dict((details or {}).get("bn_branch") or {}),
        "init_from": config.model.init_from or "",
        "curve": {"attack": cfg.curve_attack, "points": [list(map(float, p)) for p in curve]},
    }
    for k in DETAIL_KEYS:
        if details and details.get(k) is not None:
            report[k] = details[k]
    return report


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def _data_line(d: dict) -> str:
    return (f"{d['name']} / {d['split']} ({d['num_examples']} examples, preprocess `{d['preprocess']}`, "
            f"image size {d['image_size']})")


def _corruption_lines(title: str, sec: dict, png: Optional[str]) -> list:
    m = sec["metrics"]
    errs = sec["errors"]
    sev = sorted({s for per in errs.values() for s in per}, key=int)
    lines = ["", f"## {title}", ""]
    if "data" in sec:
        lines += [f"Data: {_data_line(sec['data'])}  "]
    if "builder" in sec:
        lines += [f"Corrupted sets: TFDS `{sec['builder']}`  "]
    if sec.get("settings", {}).get("parameters"):
        st = sec["settings"]
        lines += [f"Corruptions computed on the fly: {st['parameters']}; seed {st['seed']}, "
                  f"quantize {st['quantize']}.  "]
    lines += [f"Clean error {_pct(m['clean_error'])}%; mean corruption error {_pct(m['mean_corruption_error'])}% "
              f"(accuracy {_pct(m['mean_corruption_accuracy'])}%) over {len(errs)} corruption(s) x {len(sev)} "
              f"severities; over the benchmark corruptions {_pct(m['mean_corruption_error_benchmark'])}%.  "]
    if "mce" in m:
        mce = "n/a (needs all 15)" if m["mce"] is None else f"{100 * m['mce']:.2f}"
        rel = "n/a" if m["relative_mce"] is None else f"{100 * m['relative_mce']:.2f}"
        lines += [f"mCE {mce}, relative mCE {rel} (AlexNet-normalised, ImageNet-C protocol).  "]
    if png:
        lines += ["", f"![corruption errors]({os.path.basename(png)})"]
    head = "| corruption | " + " | ".join(f"s{s}" for s in sev) + " | mean |" + (" CE | rel. CE |" if "ce" in m else "")
    lines += ["", head, "|" + "---|" * (len(sev) + 2 + (2 if "ce" in m else 0))]
    for c, per in errs.items():
        row = f"| {c} | " + " | ".join(_pct(per[s]) for s in sev) + f" | {_pct(m['corruption_error'][c])} |"
        if "ce" in m:
            row += f" {_pct(m['ce'].get(c))} | {_pct(m['relative_ce'].get(c))} |"
        lines.append(row)
    return lines


def example_rows(examples: dict):
    """Example-grid rows from the examples each task saved: clean, attacks, AutoAttack, corruptions."""
    rows, labels, seen = [], None, set()
    for task in ("attacks", "autoattack", "corruptions"):
        arrays = examples.get(task)
        if not arrays:
            continue
        labels = arrays["labels"] if labels is None else labels
        for key in arrays:
            if key.endswith(":images"):
                name = key[:-len(":images")]
                if name not in seen:
                    seen.add(name)
                    rows.append((name, arrays[key], arrays[f"{name}:pred"]))
    return rows, labels


def accuracy_table(report: dict) -> list:
    """The evaluator table; dual-BN models get a column naming the BatchNorm set behind each number."""
    branch = report.get("bn_branch") or {}
    if not any(b not in ("-", None) for b in branch.values()):
        return ["| evaluator | accuracy (%) |", "|---|---|"] + [
            f"| {k} | {_pct(v)} |" for k, v in report["accuracy"].items()]
    return ["| evaluator | accuracy (%) | BN set |", "|---|---|---|"] + [
        f"| {k} | {_pct(v)} | {branch.get(k, '-')} |" for k, v in report["accuracy"].items()]


def write_report(report: dict, workdir: str, examples: Optional[dict] = None, class_names=None) -> None:
    """Writes report.json, report.md and the plots into `workdir` (process 0 only should call it).
    `examples`: {task: arrays} saved by the tasks (the example grid); `class_names` label the grid."""
    from robust_jax import plots

    os.makedirs(workdir, exist_ok=True)
    chunks.write_json(os.path.join(workdir, "report.json"), report)
    tm = report["threat_model"]
    lines = [f"# Robustness report: {report['model']} ({report['method']})", "",
             f"Variables: `{report['variables']}`  ",
             f"Data: {_data_line(report['data'])}  ",
             f"Threat model: {tm['norm']} eps={tm['eps']:.5g}, step {tm['step_size']:.5g}  "]
    if report.get("init_from"):
        lines.append(f"Started from: `{report['init_from']}`  ")
    lines += [""] + accuracy_table(report)
    if report["curve"]["points"]:
        path = plots.accuracy_vs_eps(report["curve"]["points"], report["curve"]["attack"],
                                     os.path.join(workdir, "accuracy_vs_eps.png"))
        lines += ["", f"![accuracy vs eps]({os.path.basename(path)})", "",
                  "| eps | accuracy (%) |", "|---|---|"]
        lines += [f"| {e:.4g} | {100 * a:.2f} |" for e, a in report["curve"]["points"]]
    aa = report.get("autoattack")
    if aa:
        lines += ["", "## AutoAttack", "",
                  f"Version {aa['version']}, {aa['norm']} eps={aa['eps']:.5g}, seed {aa['seed']}, "
                  f"{aa['num_examples']} points ({aa['seconds']:.0f} s): clean {_pct(aa['clean_accuracy'])}%, "
                  f"robust {_pct(aa['robust_accuracy'])}%.", "", "| after attack | robust accuracy (%) |", "|---|---|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in aa["per_attack"].items()]
    for key, title, png in (("corruptions", "Common corruptions (on the fly)", "corruption_errors.png"),
                            ("corrupted_tfds", "Common corruptions (TFDS corrupted sets)", "corruption_errors_tfds.png")):
        sec = report.get(key)
        if sec:
            errs = sec["errors"]
            names = list(errs)
            sev = sorted({s for per in errs.values() for s in per}, key=int)
            path = plots.corruption_heatmap([[errs[c][s] for s in sev] for c in names], names, sev,
                                            os.path.join(workdir, png))
            lines += _corruption_lines(title, sec, path)
    shift = report.get("shift_sets")
    if shift:
        lines += ["", "## Distribution-shift sets", "",
                  "| set | accuracy (%) | examples | classes | source / split | preprocess | image size |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {_pct(r['accuracy'])} | {r['num_examples']} | {r['classes']}"
                  f"{' (masked)' if r['mask'] == 'present' else ''} | {r['name']} / {r['split']} | "
                  f"`{r['preprocess']}` | {r['image_size']} |" for k, r in shift.items()]
    if examples:
        rows, labels = example_rows(examples)
        if rows:
            path = plots.examples_grid(rows, labels, os.path.join(workdir, "examples.png"), class_names=class_names)
            lines += ["", "## Examples (first evaluated images; titles: predicted class, red = wrong)", "",
                      f"![examples]({os.path.basename(path)})"]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
