"""The one loop every converter shares: fill a Flax variables template from a torch state_dict, strictly."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from robust_jax.models.convert.resnet import _to_numpy


def torch_shape(shape, leaf: str):
    """The shape torch stores a Flax leaf in: conv kernels HWIO -> OIHW, dense kernels (I,O) -> (O,I)."""
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def from_torch(value: np.ndarray, leaf: str) -> np.ndarray:
    """A torch tensor (as numpy) in Flax's layout: the inverse of `torch_shape`."""
    if leaf == "kernel" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def fill(template, sd: dict, *, torch_key: Callable, what: str, torch_shape: Callable = torch_shape,
         from_torch: Callable = from_torch):
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
