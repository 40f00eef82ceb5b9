"""Single-BN variables -> a dual-BN model's variables, each BatchNorm copied into its `clean` and `adv` sets.

The starting point of AdvBN (and AdvProp) fine-tuning: a model trained with one set of BatchNorms, whose
statistics and affine parameters initialise both sets of the dual-BN model. Strict: every source leaf is
used, every target leaf filled with the same shape, and mismatches are reported by path.
"""
from __future__ import annotations

import jax
import numpy as np

from robust_jax.models import variables_io
from robust_jax.models.layers import BN_MODES


def single_bn_key(path) -> str:
    """'batch_stats/layer1/0/bn1/adv/mean' -> 'batch_stats/layer1/0/bn1/mean' (the set's name dropped)."""
    parts = [str(getattr(p, "key", p)) for p in path]
    if len(parts) >= 2 and parts[-2] in BN_MODES:
        del parts[-2]
    return "/".join(parts)


def is_dual(template) -> bool:
    """Whether a variables tree (or its shapes) holds dual BatchNorm sets."""
    return any(single_bn_key(p) != "/".join(str(getattr(k, "key", k)) for k in p)
               for p, _ in jax.tree_util.tree_flatten_with_path(template)[0])


def to_dual_bn(variables, template, *, what: str = "variables"):
    """`variables` of a single-BN model, shaped as `template` (a dual-BN model's variables or their shapes)."""
    src = variables_io.flat(variables)
    used, out = set(), {}
    for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]:
        key = single_bn_key(path)
        if key not in src:
            continue  # reported below as a missing key
        used.add(key)
        node = out
        names = [str(getattr(p, "key", p)) for p in path]
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = np.asarray(src[key])
    unused = sorted(set(src) - used)
    if unused:
        raise ValueError(f"{what} has leaves the dual-BN model does not: " + ", ".join(unused[:12])
                         + (f" ... and {len(unused) - 12} more" if len(unused) > 12 else ""))
    variables_io.check_same_structure(out, template, what=f"{what} (expanded to dual BN)")
    return out
