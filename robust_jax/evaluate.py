"""Robustness evaluation: `evaluate(config, workdir)` runs `config.eval.suite` (and the eps curve) on the
variables of `workdir` (or `eval.checkpoint`) and writes report.json / report.md / plots there.

Suite entries (comma-separated): `clean`, `fgsm`, `pgd-K`, `cw-K`, `autoattack`, `corruptions`,
`corrupted_tfds`, `shift_sets`; see `robust_jax.evaluation.suite` and docs/evaluation.md. Results are
saved per chunk under `workdir/eval/` as they come, so an interrupted evaluation resumes where it stopped
and gives the same report. The engine lives in `robust_jax.evaluation`; this module is the entry point
and keeps the names training and notebooks use (`run_suite`, `parse_suite`, `make_report`, `write_report`).
"""
from __future__ import annotations

import os

import jax

from robust_jax import builders, compile_options, config_checks, data, parallel
from robust_jax.best_checkpoint import weights_checkpoints
from robust_jax.evaluation import shift_sets
from robust_jax.evaluation.attack_eval import EVALUATORS, make_eval_step, threat_model  # noqa: F401  (public names)
from robust_jax.evaluation.report import make_report, write_report  # noqa: F401
from robust_jax.evaluation.runner import run_suite, run_suite_detailed  # noqa: F401
from robust_jax.evaluation.suite import parse_suite  # noqa: F401
from robust_jax.models import variables_io


def load_eval_variables(config, workdir, run):
    """Variables to evaluate: `eval.checkpoint` (a variables file, e.g. converted from PyTorch) when
    set, else the training checkpoint of `workdir` (its best one with `train.select_best`, else the latest).
    Returns (variables, description)."""
    if config.eval.checkpoint:
        template = jax.eval_shape(lambda: run.state.eval_variables(use_ema=False))
        return variables_io.load_variables(config.eval.checkpoint, template), config.eval.checkpoint
    ckpts = weights_checkpoints(workdir)
    _require_a_checkpoint(ckpts)
    state = ckpts.restore_weights(run.state)
    ckpts.close()
    return state.eval_variables(config.eval.use_ema), f"{ckpts.directory} (step {int(state.step)})"


def _require_a_checkpoint(ckpts) -> None:
    if ckpts.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {ckpts.directory} and no eval.checkpoint set: train first "
                                "(--mode train) or point --config.eval.checkpoint at a variables file")


def _require_weights(config, workdir: str) -> None:
    """Raises FileNotFoundError when there is nothing to evaluate: checked before the model is built and its
    initialisation compiled, so the mistake is reported in seconds."""
    if config.eval.checkpoint:
        if not os.path.exists(config.eval.checkpoint):
            raise FileNotFoundError(f"no variables file at {config.eval.checkpoint!r} (eval.checkpoint)")
        return
    ckpts = weights_checkpoints(workdir)
    _require_a_checkpoint(ckpts)
    ckpts.close()


def variables_id(config, source: str) -> str:
    """What identifies the evaluated weights for resuming: the checkpoint (with its step), or the variables
    file with its size and modification time (a re-converted file starts a fresh evaluation)."""
    path = config.eval.checkpoint
    if path:
        st = os.stat(path)
        return f"{os.path.abspath(path)} size={st.st_size} mtime_ns={st.st_mtime_ns}"
    return f"{source} ema={bool(config.eval.use_ema)}"


def evaluate(config, workdir: str) -> dict:
    """Runs the configured suite (and eps curve), resuming from `workdir/eval/`, and writes the report.
    The config and the dataset are checked first (`config_checks`), before anything is computed or written."""
    parallel.initialize_distributed()
    compile_options.configure(config)  # XLA:CPU's faster conv path for the suite unless config.xla_cpu_fast_conv is False
    config_checks.validate(config, "eval", device_count=jax.device_count())
    config_checks.check_data(config)
    _require_weights(config, workdir)
    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    variables, source = load_eval_variables(config, workdir, run)
    variables = parallel.replicate(variables, mesh)
    store_root = os.path.join(workdir, "eval") if config.eval.resume else None
    common = dict(store_root=store_root, variables_id=variables_id(config, source), num_classes=run.num_classes)
    details = run_suite_detailed(run.model, variables, config, mesh, suite=config.eval.suite, **common)
    curve = []
    for eps in config.eval.curve_eps:
        acc = run_suite_detailed(run.model, variables, config, mesh, suite=config.eval.curve_attack, eps=eps,
                                 desc=f"eps={eps:.4g}", **common)["accuracy"]
        curve.append((float(eps), acc[config.eval.curve_attack]))
    report = make_report(config, details["accuracy"], curve, source, details)
    if jax.process_index() == 0:
        write_report(report, workdir, examples=details["examples"],
                     class_names=shift_sets.class_names(data.source_for(config.data)))
    return report
