"""Config validation before any work: `validate(config, mode)` reads the whole config once and raises one
`ConfigError` listing every field whose value the run cannot use, before a workdir, a model or a dataset exists.

What it checks (only what the run will read): perturbation budgets (`method.attack.eps` of the methods that
attack, `eval.eps`, `eval.autoattack.eps`, `eval.curve_eps`) are > 0 — and at most 1 for Linf, as images
live in [0,1] — step sizes are > 0 and attack steps >= 1; the eval suites name known evaluators; a training run
has steps to take; batch sizes are positive and, given the device count, split evenly over the devices
(`parallel.local_batch_size`); counters that divide or count (`train.log_every`, ...) are in range.
Dataset-level checks (classes, labels) live with the data (`robust_jax.data.sources`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Optional

# The methods that train against `method.attack` (DAT reads its eps/step_size/steps as an L2 attack).
ATTACKING_METHODS = ("pgd_at", "trades", "mart", "amp", "dat")
NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One field the run cannot use: its dotted name under `config.`, its value and what is allowed."""

    field: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"config.{self.field}={self.value!r} is not allowed (allowed: {self.allowed})"


class ConfigError(ValueError):
    """The config has fields the run cannot use; `problems` lists them (field, value, allowed values)."""

    def __init__(self, problems: List[Problem]):
        self.problems = list(problems)
        fields = dict.fromkeys(p.field.split("[")[0] for p in self.problems)  # eval.curve_eps[1] -> eval.curve_eps
        fixes = ", ".join(f"--config.{f}=..." for f in fields)
        super().__init__(f"invalid config: {'; '.join(map(str, self.problems))}. Fix the value(s) in the config "
                         f"file or on the command line ({fixes}).")


def _number(v) -> Optional[float]:
    """`v` as a float when it is a real number (not a bool), else None."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _budget(field: str, eps, norm: str, *, zero_ok: bool = False, zero_means: str = "") -> List[Problem]:
    """A perturbation budget in [0,1] pixel units: > 0 (>= 0 where 0 has a meaning), finite, <= 1 for Linf."""
    f = _number(eps)
    lo = f"{'>= 0' if zero_ok else '> 0'}{zero_means}"
    allowed = f"{lo} and <= 1 (Linf on [0,1] images)" if norm == "linf" else f"{lo}, finite"
    if f is None or not math.isfinite(f) or f < 0 or (f == 0 and not zero_ok) or (norm == "linf" and f > 1):
        return [Problem(field, eps, allowed)]
    return []


def _positive(field: str, v, *, integer: bool = False, zero_ok: bool = False) -> List[Problem]:
    """A finite number > 0 (or >= 0 with zero_ok), an integer where `integer`."""
    f = _number(v)
    ok = f is not None and math.isfinite(f) and (f > 0 or (zero_ok and f == 0))
    if ok and integer:
        ok = f == int(f)
    if ok:
        return []
    kind = "an integer" if integer else "a number"
    return [Problem(field, v, f"{kind} {'>= 0' if zero_ok else '> 0'}")]


def _norm(field: str, norm, allowed=NORMS) -> List[Problem]:
    return [] if norm in allowed else [Problem(field, norm, " or ".join(repr(n) for n in allowed))]


def _suite(field: str, suite) -> List[Problem]:
    """A comma-separated list of known evaluators (`evaluation.suite.parse_suite`)."""
    from robust_jax.evaluation import suite as suite_lib
    from robust_jax.evaluation import tasks

    try:
        suite_lib.parse_suite(suite)
    except ValueError as e:
        known = ", ".join(tasks.TASK_OF)
        return [Problem(field, suite, f"comma-separated evaluators among {known}, pgd/cw with a step count "
                                      f"such as pgd-20 ({e})")]
    return []


def _attack_problems(config) -> List[Problem]:
    """`method.attack` of the methods that attack (ATTACKING_METHODS)."""
    if config.method.name not in ATTACKING_METHODS or "attack" not in config.method:
        return []
    a = config.method.attack
    norm = "l2" if config.method.name == "dat" else a.norm
    problems = _norm("method.attack.norm", a.norm)
    problems += _budget("method.attack.eps", a.eps, norm)
    problems += _positive("method.attack.step_size", a.step_size)
    problems += _positive("method.attack.steps", a.steps, integer=True)
    return problems


def _eval_problems(config, mode: str) -> List[Problem]:
    """The `eval` block of a classifier run (and the periodic evaluation of `train`)."""
    e = config.eval
    problems = _norm("eval.norm", e.norm)
    norm = e.norm
    problems += _budget("eval.eps", e.eps, norm)
    problems += _positive("eval.step_size", e.step_size)
    problems += _positive("eval.batch_size", e.batch_size, integer=True)
    problems += _positive("eval.num_examples", e.num_examples, integer=True, zero_ok=True)
    problems += _suite("eval.suite", e.suite)
    if "autoattack" in e:
        aa = e.autoattack
        problems += _norm("eval.autoattack.norm", aa.norm, ("",) + NORMS)
        problems += _budget("eval.autoattack.eps", aa.eps, aa.norm or norm, zero_ok=True,
                            zero_means=" (0 = eval.eps)")
    curve = tuple(e.curve_eps or ())
    for i, eps in enumerate(curve):
        problems += _budget(f"eval.curve_eps[{i}]", eps, norm, zero_ok=True, zero_means=" (0 = clean accuracy)")
    if curve:
        problems += _suite("eval.curve_attack", e.curve_attack)
    if mode == "train" and config.train.eval_every:
        problems += _suite("train.eval_suite", config.train.eval_suite)
    return problems


def _train_problems(config, mode: str) -> List[Problem]:
    """The length and the counters of a training run."""
    t = config.train
    problems = _positive("train.batch_size", t.batch_size, integer=True)
    if mode != "train":
        return problems
    problems += _positive("train.num_steps", t.num_steps, integer=True, zero_ok=True)
    problems += _positive("train.epochs", t.epochs, zero_ok=True)
    if not problems and not t.num_steps and not t.epochs:
        problems.append(Problem("train.num_steps", t.num_steps,
                                "> 0, or train.epochs > 0 (with both 0 the run would train no step and report "
                                "the random initial weights)"))
    problems += _positive("train.log_every", t.log_every, integer=True)
    for field in ("eval_every", "checkpoint_every"):
        problems += _positive(f"train.{field}", t[field], integer=True, zero_ok=True)
    return problems


def _device_problems(config, device_count: int) -> List[Problem]:
    """Global batches are split evenly over the devices (`parallel.local_batch_size`)."""
    problems = []
    fields = [("train.batch_size", config.train.batch_size)]
    if "batch_size" in config.eval:
        fields.append(("eval.batch_size", config.eval.batch_size))
    for field, size in fields:
        if _number(size) is not None and size > 0 and size % device_count:
            problems.append(Problem(field, size, f"a multiple of the device count {device_count}"))
    return problems


def _data_problems(config) -> List[Problem]:
    n = config.data.num_classes
    if _number(n) is None or n < 0 or n == 1 or n != int(n):
        return [Problem("data.num_classes", n, "0 (from the dataset) or an integer >= 2")]
    return []


def validate(config, mode: str = "train", *, device_count: Optional[int] = None) -> None:
    """Raises `ConfigError` listing every field of `config` that a run in `mode` ('train' or 'eval') cannot
    use. `device_count`: the devices the batches are sharded over (None: not checked; pass it after
    `jax.distributed` is initialised, as asking JAX for devices earlier would start its backend)."""
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    from robust_jax import trainers

    problems = _train_problems(config, mode) + _data_problems(config)
    if config.method.name not in trainers.TRAINERS:  # classifiers; other trainers own their eval block
        problems += _attack_problems(config) + _eval_problems(config, mode)
    if device_count:
        problems += _device_problems(config, device_count)
    if problems:
        raise ConfigError(problems)


def check_run_length(total_steps: int, config) -> None:
    """A training run must take at least one step; train.epochs may round to 0 steps on a small dataset."""
    if total_steps < 1:
        raise ConfigError([Problem("train.epochs", config.train.epochs,
                                   f"a value giving at least one step (train.epochs={config.train.epochs} rounds "
                                   "to 0 steps on this dataset and batch size; or set train.num_steps)")])


def check_data(config) -> None:
    """The dataset of a classifier run (`data.sources.check_classification_data`): at least 2 classes, and no
    evaluation label beyond the training labels when the classes are inferred. Reads the source (labels only);
    other trainers (VQGAN) need no labels and are not checked."""
    from robust_jax import data, trainers
    from robust_jax.data import sources

    if config.method.name in trainers.TRAINERS:
        return
    cfg = config.data
    eval_split = config.eval.split or cfg.eval_split
    sources.check_classification_data(data.source_for(cfg), cfg.train_split, (eval_split,),
                                      inferred=not cfg.num_classes)
