"""The evaluation tasks, picked by name (as big_vision's evaluators): one module per task, registered in TASKS.

A task module has
  ENTRIES    the suite entry kinds it computes (`pgd` for the entry `pgd-20`)
  STEPPED    optional: those of ENTRIES written with a step count (`pgd-20`)
  run(ctx)   computes them for a `Context`: reads its model, variables, config and data, saves per-chunk
             results in `ctx.stores` and writes `ctx.out['accuracy'][entry]` plus a section of its own
and runs once per suite, however many of its entries the suite names. A new task is a module here and its
line in TASKS; `suite.parse_suite` knows the entry kinds from TASKS.
"""
from __future__ import annotations

from typing import Dict, List

from robust_jax.evaluation.tasks import attacks, autoattack, corrupted_tfds, corruptions, shift_sets

TASKS = {
    "attacks": attacks,  # clean, fgsm, pgd-K, cw-K in one compiled step
    "autoattack": autoattack,
    "corruptions": corruptions,
    "corrupted_tfds": corrupted_tfds,
    "shift_sets": shift_sets,
}


def _task_of_kind() -> Dict[str, str]:
    out = {}
    for name, module in TASKS.items():
        for kind in module.ENTRIES:
            if kind in out:
                raise ValueError(f"suite entry {kind!r} is claimed by tasks {out[kind]!r} and {name!r}")
            out[kind] = name
    return out


TASK_OF = _task_of_kind()
"""Suite entry kind -> the name of the task that computes it."""
STEPPED = tuple(kind for module in TASKS.values() for kind in getattr(module, "STEPPED", ()))
"""The entry kinds written with a step count (`pgd-20`)."""


def plan(entries) -> List[str]:
    """The names of the tasks `entries` (`suite.Entry`) need, each once: `attacks` first (`corrupted_tfds` reads
    its clean accuracy for the relative mCE), then the others in suite order."""
    names = list(dict.fromkeys(e.task for e in entries))
    return sorted(names, key=lambda name: name != "attacks")
