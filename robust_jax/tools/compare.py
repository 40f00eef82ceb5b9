"""Side-by-side reports of several runs: `python -m robust_jax.tools.compare RUN_DIR... [--output DIR]`.

Reads each run's `report.json` (written by training or `--mode eval`) and writes `comparison.md` (overall
accuracies, and per-corruption accuracy when the runs evaluated corruptions) and `comparison.png` (grouped
bars) into `--output` (default: the current directory). Runs are labelled by their directory name, or by
`--labels`. Numbers are only comparable when the runs used the same evaluation data and settings: the data
line of every run is printed, and differing ones are flagged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def load_report(run_dir: str) -> dict:
    path = run_dir if run_dir.endswith(".json") else os.path.join(run_dir, "report.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no report at {path!r}: train the run (python main.py --config ... --workdir "
                                f"{run_dir}) or evaluate it (--mode eval) first")
    with open(path) as f:
        return json.load(f)


def corruption_accuracy(report: dict):
    """{corruption: mean accuracy over severities} of the on-the-fly corruption section, or None."""
    sec = report.get("corruptions")
    if not sec:
        return None
    return {c: 1.0 - float(np.mean(list(per.values()))) for c, per in sec["errors"].items()}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def comparison(reports: dict) -> tuple:
    """(markdown lines, {row: {run: accuracy}}) for reports {label: report}; the rows are the overall
    accuracies followed by each corruption's (mean over severities) when the runs evaluated corruptions."""
    labels = list(reports)
    rows = {}
    for label, rep in reports.items():
        for k, v in rep["accuracy"].items():
            rows.setdefault(k, {})[label] = v
    lines = ["# Comparison", "", "| run | method | model | evaluation data |", "|---|---|---|---|"]
    data = {label: json.dumps(rep.get("data"), sort_keys=True) for label, rep in reports.items()}
    for label, rep in reports.items():
        d = rep.get("data", {})
        start = f", from `{rep['init_from']}`" if rep.get("init_from") else ""
        lines.append(f"| {label} | {rep.get('method')}{start} | {rep.get('model')} | {d.get('name')} / "
                     f"{d.get('split')}, {d.get('num_examples')} examples |")
    if len(set(data.values())) > 1:
        lines += ["", "**Warning: the runs were evaluated on different data or preprocessing; the numbers below "
                  "are not directly comparable.**"]
    lines += ["", "| accuracy (%) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    branches = {label: rep.get("bn_branch") or {} for label, rep in reports.items()}

    def cell(k, lb):  # dual-BN runs name the BatchNorm set behind each number
        b = branches[lb].get(k)
        return _pct(rows[k].get(lb)) + (f" ({b} BN)" if b not in (None, "-") and lb in rows[k] else "")

    lines += [f"| {k} | " + " | ".join(cell(k, lb) for lb in labels) + " |" for k in rows]
    per_corruption = {label: corruption_accuracy(rep) for label, rep in reports.items()}
    names = [c for c in next((v for v in per_corruption.values() if v), {})]
    if names:
        lines += ["", "## Accuracy per corruption (mean over severities, %)", "",
                  "| corruption | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for c in names:
            lines.append(f"| {c} | " + " | ".join(_pct((per_corruption[lb] or {}).get(c)) for lb in labels) + " |")
    for c in names:  # the plot shows each corruption after the overall numbers
        rows[c] = {lb: per_corruption[lb][c] for lb in labels if per_corruption[lb] and c in per_corruption[lb]}
    return lines, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m robust_jax.tools.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (holding report.json) or report.json files")
    p.add_argument("--labels", default="", help="comma-separated labels, one per run (default: directory names)")
    p.add_argument("--output", default=".", help="directory for comparison.md and comparison.png")
    args = p.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs) or len(set(labels)) != len(labels):
        print("compare: error: need one distinct label per run", file=sys.stderr)
        return 2
    try:
        reports = {label: load_report(r) for label, r in zip(labels, args.runs)}
    except FileNotFoundError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 1
    lines, rows = comparison(reports)
    os.makedirs(args.output, exist_ok=True)
    from robust_jax import plots

    png = plots.grouped_bars(rows, labels, os.path.join(args.output, "comparison.png"))
    lines += ["", f"![comparison]({os.path.basename(png)})"]
    with open(os.path.join(args.output, "comparison.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
