"""Reading optimised HLO text (`jax.jit(f).lower(...).compile().as_text()`): which computations exist and
which instructions run inside a `while` loop. Used by the structural speed test of the attack loop
(tests/test_pgd_speed_structure.py) and by benchmarks/loop_vs_unrolled.py to show where convolutions land
and in which kernel layout (see benchmarks/README.md)."""
from __future__ import annotations

import re
from typing import Dict, List, Set

_CALLEE = re.compile(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_WHILE_BODY = re.compile(r" while\(.*?body=%([\w.\-]+)")


def computations(hlo: str) -> Dict[str, List[str]]:
    """{computation name: its instruction lines}."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif line == "}":
            name = None
        elif name:
            comps[name].append(line)
    return comps


def reachable(comps: Dict[str, List[str]], root: str) -> Set[str]:
    """Names of `root` and every computation it calls (fusions, reductions, loops, conditionals)."""
    seen, todo = set(), [root]
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for line in comps[c]:
            todo += _CALLEE.findall(line)
            for group in _BRANCHES.findall(line):
                todo += re.findall(r"%([\w.\-]+)", group)
    return seen


def loops_with(hlo: str, op: str = "convolution") -> List[List[str]]:
    """For each while loop whose body (with all it calls) holds an `op` instruction: those body lines."""
    comps = computations(hlo)
    bodies = [b for lines in comps.values() for line in lines for b in _WHILE_BODY.findall(line)]
    loops = []
    for body in bodies:
        lines = [line for c in reachable(comps, body) for line in comps[c]]
        if any(f" {op}(" in line for line in lines):
            loops.append(lines)
    return loops
