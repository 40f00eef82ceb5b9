"""The one loop every converter shares: fill a Flax variables template from a torch state_dict, strictly."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from robust_jax.models.convert.resnet import _to_numpy


def fill(template, sd: dict, *, torch_key: Callable, torch_shape: Callable, from_torch: Callable, what: str):
    """{path: array} tree shaped like `template` (ShapeDtypeStructs) with every leaf read from `sd`.

    `torch_key(path)` names the torch tensor of a Flax leaf path (a tuple of strings), `torch_shape(shape,
    leaf)` is the shape torch stores it in and `from_torch(array, leaf)` brings it to Flax's layout. Every
    torch key must be used and every leaf found with its shape; otherwise a ValueError lists each
    unexpected torch key, missing torch key and shape mismatch. Returns (tree, used keys).
    """
    out, used, missing, shapes = {}, set(), [], []
    for path, spec in jax.tree_util.tree_flatten_with_path(template)[0]:
        path = tuple(str(getattr(p, "key", p)) for p in path)
        key = torch_key(path)
        if key not in sd:
            missing.append(f"  missing torch key {key!r} (for Flax {'/'.join(path)})")
            continue
        used.add(key)
        value = _to_numpy(sd[key])
        want = tuple(torch_shape(tuple(spec.shape), path[-1]))
        if tuple(value.shape) != want:
            shapes.append(f"  shape mismatch for torch key {key!r}: got {tuple(value.shape)}, expected {want} "
                          f"(Flax {'/'.join(path)} {tuple(spec.shape)})")
            continue
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = np.asarray(from_torch(value, path[-1])).astype(spec.dtype)
    unexpected = [f"  unexpected torch key {k!r}" for k in sorted(set(sd) - used)]
    if missing or unexpected or shapes:
        raise ValueError("\n".join([f"state_dict does not match {what} ({len(sd)} torch keys):"]
                                   + unexpected + missing + shapes))
    return out, used
