"""The config a workdir was trained with: `workdir/config.json`, written when a run starts and compared when it
resumes, so that the record always says how the weights in the workdir were trained.

Resuming with a different config is refused with a readable diff (`field: saved -> new`) when a changed field
decides how the weights are trained (method, attack, optimiser, model, data, batch size, seed, ...). Fields that
only say how long to train, how to log, checkpoint and evaluate, or which CPU convolution kernels to compile
(`RESUMABLE_FIELDS`) may change — extending `train.num_steps` is how a run is continued — and so may fields the
saved config lacks (written by an older version of the code, before the field existed). Every accepted change
keeps the previous file as `config.<n>.json` (n = 1, 2, ... in order), so the workdir holds the whole history;
`allow_change=True` (main.py's `--allow_config_change`) accepts the other fields too, with the same record.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Tuple

import jax
from absl import logging

CONFIG_FILE = "config.json"
# Dotted names (or prefixes ending in '.') of the fields a resumed run may change without allow_change: the run's
# length, logging, checkpointing and evaluation, none of which changes the steps already taken.
RESUMABLE_FIELDS = ("train.num_steps", "train.epochs", "train.log_every", "train.eval_every", "train.eval_suite",
                    "train.eval_examples", "train.checkpoint_every", "train.checkpoint_minutes",
                    "train.keep_checkpoints", "eval.", "xla_cpu_fast_conv")
_ABSENT = "<absent>"


class ConfigChangedError(ValueError):
    """A workdir is resumed with a config that trains differently from the one it was trained with."""


def flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; non-dict values (lists included) are leaves."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def config_diff(saved: Dict[str, Any], new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(field, saved value, new value) for every leaf that differs, sorted by field; a missing leaf is
    `<absent>` (a config written by another version of the code)."""
    a, b = flatten(saved), flatten(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def resumable(field: str) -> bool:
    """Whether `field` may change when a run resumes without allow_change (RESUMABLE_FIELDS)."""
    return any(field == f or (f.endswith(".") and field.startswith(f)) for f in RESUMABLE_FIELDS)


def format_diff(diff) -> str:
    """`field: saved -> new` lines."""
    return "\n".join(f"  {field}: {json.dumps(old)} -> {json.dumps(new)}" for field, old, new in diff)


def _numbered(workdir: str) -> List[Tuple[int, str]]:
    """(n, path) of the config.<n>.json files in `workdir`, by n."""
    found = []
    for name in os.listdir(workdir) if os.path.isdir(workdir) else ():
        m = re.fullmatch(r"config\.(\d+)\.json", name)
        if m:
            found.append((int(m.group(1)), os.path.join(workdir, name)))
    return sorted(found)


def config_history(workdir: str) -> List[str]:
    """The earlier configs of `workdir` kept by resumed runs that changed it, oldest first (config.<n>.json)."""
    return [path for _, path in _numbered(workdir)]


def _read_saved(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigChangedError(f"cannot read the saved config {path} ({e}); it records how the workdir was "
                                 "trained: restore it, or start in a new workdir") from None


def _write(path: str, text: str) -> None:
    """Writes `text` to `path` atomically (a crash leaves the old file or the new one, never half of one)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_config(config, workdir: str, *, allow_change: bool = False) -> List[Tuple[str, Any, Any]]:
    """Writes the resolved `config` as `workdir/config.json` (process 0), comparing it first with the one saved
    by an earlier run of the workdir. A change of a field outside RESUMABLE_FIELDS raises ConfigChangedError
    with the diff unless `allow_change`; an accepted change moves the saved file to `config.<n>.json` first.
    Returns the diff (empty for a new workdir or an unchanged config). Call it before training starts."""
    text = config.to_json_best_effort(indent=2)
    path = os.path.join(workdir, CONFIG_FILE)
    diff = config_diff(_read_saved(path), json.loads(text)) if os.path.exists(path) else []
    blocking = [d for d in diff if not resumable(d[0]) and d[1] != _ABSENT]
    if blocking and not allow_change:
        raise ConfigChangedError(
            f"{workdir} was trained with another config ({path}); resuming it with this one would change how "
            f"it is trained, and its record:\n{format_diff(blocking)}\nRun with the saved values, use a new "
            "--workdir, or pass --allow_config_change (trainers: allow_config_change=True) to continue with "
            "the new values (the saved config is kept as config.<n>.json).")
    if jax.process_index() != 0 or (diff == [] and os.path.exists(path)):
        return diff
    os.makedirs(workdir, exist_ok=True)
    if diff:
        kept = os.path.join(workdir, f"config.{max([n for n, _ in _numbered(workdir)], default=0) + 1}.json")
        os.replace(path, kept)
        logging.warning("%s: resumed with a changed config (the previous one is kept as %s):\n%s", workdir, kept,
                        format_diff(diff))
    _write(path, text)
    return diff
