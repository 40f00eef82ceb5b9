"""Model variables on disk: one msgpack file holding `{'params': ..., 'batch_stats': ...}`.

This is the exchange format of converted checkpoints (`robust-jax-convert`) and of the
`config.model.init_from` field. Loading is strict: the file must have exactly the keys and shapes of
the model it is loaded into, and every mismatch is reported by its path.
"""
from __future__ import annotations

import os

import flax.serialization
import jax
import numpy as np


def save_variables(path: str, variables) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = jax.tree.map(np.asarray, flax.serialization.to_state_dict(variables))
    with open(path, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(state))


MAX_LISTED = 12  # per kind of mismatch, so a wrong model gives a readable message


def flat(tree) -> dict:
    """{'a/b/leaf': array} of a nested tree (dicts or flax state dicts)."""
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_same_structure(loaded, template, *, what: str) -> None:
    """Raises ValueError naming every missing/unexpected key and shape mismatch between two trees."""
    got, want = flat(loaded), flat(template)
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = [f"{k}: {tuple(np.shape(got[k]))} != expected {tuple(np.shape(want[k]))}"
              for k in sorted(set(got) & set(want)) if np.shape(got[k]) != np.shape(want[k])]
    if missing or unexpected or shapes:
        lines = [f"{what} does not match the model:"]
        for label, items in (("missing key", missing), ("unexpected key", unexpected), ("shape mismatch", shapes)):
            lines += [f"  {label} {k}" for k in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append(f"  ... and {len(items) - MAX_LISTED} more {label}s")
        raise ValueError("\n".join(lines))


def read_variables(path: str) -> dict:
    """The nested dict of arrays stored in `path`, as saved (no model needed)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no variables file at {path!r}")
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def load_variables(path: str, template):
    """Reads `path` and returns it with the structure of `template` (e.g. `model.init(...)` output)."""
    state = read_variables(path)
    template_state = flax.serialization.to_state_dict(template)
    check_same_structure(state, template_state, what=f"variables file {path!r}")
    return flax.serialization.from_state_dict(template, state)
