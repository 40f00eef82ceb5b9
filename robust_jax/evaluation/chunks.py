"""Resumable evaluation: results saved per chunk of examples, as they come, and skipped on a re-run.

A task (e.g. "the PGD suite on cifar10/test", "AutoAttack", "corruptions") walks the eval batches in
chunks of `batches_per_chunk` batches. After each chunk its result (a small JSON dict of counts) is
written atomically (temp file + `os.replace`) to `<workdir>/eval/<task>-<hash>/chunk_<i>.json`, where
the hash covers everything the numbers depend on (variables, data, preprocessing, batch/chunk size,
settings; `meta.json` beside the chunks spells it out). An interrupted run therefore resumes where it
stopped, reuses nothing computed under other settings, and sums to exactly what an uninterrupted run
gives. Only process 0 writes; every process reads the finished chunks once, when the task starts (the
workdir must be visible to every process, as for checkpoints), so all of them skip the same chunks.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Callable, Iterable, List, Optional

import jax
import numpy as np
from tqdm.auto import tqdm


def fingerprint(identity: dict) -> str:
    """A short stable hash of a JSON-able dict."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Writes `obj` as JSON atomically (a reader never sees half a file)."""
    _atomic_write(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


class ChunkStore:
    """The saved chunks of one task: `<root>/<name>-<fingerprint(identity)>/`."""

    def __init__(self, root: str, name: str, identity: dict):
        self.directory = os.path.join(root, f"{name}-{fingerprint(identity)}")
        self.writer = jax.process_index() == 0
        if self.writer:
            os.makedirs(self.directory, exist_ok=True)
            meta = os.path.join(self.directory, "meta.json")
            if not os.path.exists(meta):
                write_json(meta, {"task": name, "identity": identity})

    def _chunk_path(self, i: int) -> str:
        return os.path.join(self.directory, f"chunk_{i:05d}.json")

    def finished(self) -> dict:
        """{chunk index: result} of the chunks already saved."""
        out = {}
        if not os.path.isdir(self.directory):
            return out
        for fname in sorted(os.listdir(self.directory)):
            if fname.startswith("chunk_") and fname.endswith(".json"):
                with open(os.path.join(self.directory, fname)) as f:
                    out[int(fname[6:-5])] = json.load(f)
        return out

    def save(self, i: int, result: dict) -> None:
        if self.writer:
            write_json(self._chunk_path(i), result)

    def save_arrays(self, name: str, arrays: dict) -> None:
        """Saves example arrays (e.g. images of the first chunk) as `<name>.npz`, atomically."""
        if self.writer:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            _atomic_write(os.path.join(self.directory, f"{name}.npz"), buf.getvalue())

    def load_arrays(self, name: str) -> Optional[dict]:
        path = os.path.join(self.directory, f"{name}.npz")
        if not os.path.exists(path):
            return None
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


class MemoryStore:
    """A store that keeps nothing on disk (train-time evaluation, notebooks): every chunk is computed."""

    directory = None

    def __init__(self):
        self._arrays = {}

    def finished(self) -> dict:
        return {}

    def save(self, i, result) -> None:
        pass

    def save_arrays(self, name, arrays) -> None:
        self._arrays[name] = {k: np.asarray(v) for k, v in arrays.items()}

    def load_arrays(self, name):
        return self._arrays.get(name)


def add(a, b):
    """Sums two results key by key (nested dicts of numbers; lists element-wise)."""
    if isinstance(a, dict):
        if set(a) != set(b):
            raise ValueError(f"chunk results differ in keys: {sorted(a)} vs {sorted(b)}")
        return {k: add(a[k], b[k]) for k in a}
    if isinstance(a, list):
        return [add(x, y) for x, y in zip(a, b)]
    return a + b


def run_chunks(batches: Iterable, num_batches: int, *, batches_per_chunk: int, store, compute: Callable,
               desc: str, progress: bool = True, postfix: Optional[Callable] = None) -> dict:
    """Walks `batches`, grouping them in chunks; `compute(chunk_index, first_batch_index, [batches]) ->
    result dict` runs only for chunks not in `store`, whose result is saved at once. Returns the sum of
    all chunk results. `postfix(total_so_far)` -> dict shown on the progress bar."""
    if batches_per_chunk < 1:
        raise ValueError(f"batches_per_chunk must be >= 1, got {batches_per_chunk}")
    done = store.finished()
    num_chunks = -(-num_batches // batches_per_chunk)
    total = None
    bar = tqdm(total=num_chunks, desc=desc, disable=not progress or jax.process_index() != 0, leave=False,
               dynamic_ncols=True)
    if done:
        bar.set_description(f"{desc} (resumed: {len([i for i in done if i < num_chunks])} chunks done)")
    pending: List = []
    index = 0
    try:
        for b, batch in enumerate(batches):
            c = b // batches_per_chunk
            if c not in done:
                pending.append(batch)
            last = (b + 1) % batches_per_chunk == 0 or b + 1 == num_batches
            if not last:
                continue
            if c in done:
                result = done[c]
            else:
                result = compute(c, c * batches_per_chunk, pending)
                store.save(c, result)
            pending = []
            total = result if total is None else add(total, result)
            index += 1
            bar.update(1)
            if postfix is not None:
                bar.set_postfix(postfix(total))
    finally:
        bar.close()
    if index != num_chunks:
        raise RuntimeError(f"{desc}: expected {num_chunks} chunks of data, got {index}")
    return total


def host(x) -> np.ndarray:
    """A (possibly multi-process sharded) global array as one numpy array on every process."""
    if isinstance(x, np.ndarray):
        return x
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
