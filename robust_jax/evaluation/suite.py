"""The suite: which evaluators run, parsed from `config.eval.suite` (comma-separated names).

| entry            | what it computes                                                              |
|------------------|-------------------------------------------------------------------------------|
| `clean`          | top-1 accuracy on the eval split                                              |
| `fgsm`           | accuracy under FGSM (`eval.norm`, `eval.eps`)                                 |
| `pgd-K`          | K steps of PGD on cross-entropy, random start (`eval.step_size`)              |
| `cw-K`           | K steps of PGD on the CW margin loss                                          |
| `autoattack`     | AutoAttack (`eval.autoattack`: version, norm/eps, seed, batch size)           |
| `corruptions`    | common corruptions computed on the fly (`eval.corruptions`), CE/mCE           |
| `corrupted_tfds` | the same from the prepared TFDS builders cifar10_corrupted/imagenet2012_corrupted |
| `shift_sets`     | every set of `eval.shift_sets` (ImageNet-R/-A/-Sketch/-V2, ...)               |

The entry kinds are those of the task registry (`robust_jax.evaluation.tasks`): `clean`/`fgsm`/`pgd-K`/`cw-K`
are the `attacks` task, one compiled step per batch; the others are tasks of their own.
"""
from __future__ import annotations

import dataclasses
import re
from typing import List

from robust_jax.evaluation import tasks


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str   # as written in the suite, e.g. 'pgd-20'
    kind: str   # a key of tasks.TASK_OF
    steps: int  # attack iterations (pgd/cw), else 0

    @property
    def task(self) -> str:
        """The name of the task that computes this entry."""
        return tasks.TASK_OF[self.kind]

    @property
    def is_attack(self) -> bool:
        return self.task == "attacks"


def parse_suite(suite: str) -> List[Entry]:
    """'clean,pgd-20,autoattack' -> [Entry('clean','clean',0), Entry('pgd-20','pgd',20), ...]."""
    entries = []
    for name in [s.strip() for s in str(suite).split(",") if s.strip()]:
        m = re.fullmatch(r"([a-z_]+)(?:-(\d+))?", name)
        if not m or m.group(1) not in tasks.TASK_OF:
            raise ValueError(f"unknown evaluator {name!r} in eval suite; known: {', '.join(tasks.TASK_OF)} "
                             f"({' and '.join(tasks.STEPPED)} take a step count, e.g. pgd-20)")
        kind, steps = m.group(1), int(m.group(2) or 0)
        if kind in tasks.STEPPED and steps <= 0:
            raise ValueError(f"{name!r}: give the number of steps, e.g. {kind}-20")
        if kind not in tasks.STEPPED and m.group(2) is not None:
            raise ValueError(f"{name!r}: {kind} takes no step count")
        if any(e.name == name for e in entries):
            raise ValueError(f"{name!r} appears twice in the eval suite {suite!r}")
        entries.append(Entry(name, kind, steps))
    if not entries:
        raise ValueError(f"the eval suite {suite!r} names no evaluator")
    return entries
