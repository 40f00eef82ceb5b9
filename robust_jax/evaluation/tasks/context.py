"""`Context`: what every evaluation task reads (model, variables, config, data, chunk stores) and `out`, the
result dict the tasks of one suite fill in together."""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

import ml_collections

from robust_jax import data
from robust_jax.evaluation import chunks


def data_record(cfg_data, split: str, num_examples) -> dict:
    """What the numbers of a data set depend on: source, split, size, preprocessing."""
    return {"name": cfg_data.name, "split": split, "num_examples": num_examples or "all",
            "subset": cfg_data.eval_subset if num_examples else "all",
            "preprocess": cfg_data.eval_preprocess, "image_size": cfg_data.image_size or "native",
            "data_dir": cfg_data.data_dir or ""}


class Stores:
    """Makes one ChunkStore per task under `root` (in-memory stores when root is None); each store's identity
    is `base_identity` plus what the task adds (data, settings)."""

    def __init__(self, root: Optional[str], base_identity: dict):
        self.root, self.base = root, base_identity

    def get(self, name: str, **identity):
        if self.root is None:
            return chunks.MemoryStore()
        return chunks.ChunkStore(self.root, name, {**self.base, **identity})


def _empty_out() -> dict:
    return {"accuracy": {}, "bn_branch": {}, "examples": {}, "directories": {}}


@dataclasses.dataclass
class Context:
    """One suite run as its tasks see it. `out` holds `accuracy` {entry: number}, `bn_branch`, `examples`
    {task: arrays}, `directories` {task: store directory} and each task's own section."""

    model: object                 # evaluated with BN set `eval.bn` fixed (`bn_branch.view`)
    base_model: object            # the model as given, for tasks that choose their own BN set
    variables: object
    config: ml_collections.ConfigDict
    mesh: object
    entries: List                 # the suite's entries (`suite.Entry`)
    split: str                    # the eval split
    num_examples: Optional[int]   # examples per data set (0 or None: all)
    stores: Stores
    per_chunk: int                # eval batches per saved chunk
    num_classes: int              # the model's classes
    progress: bool = True
    desc: str = "eval"            # progress-bar title of the attack entries
    eps: Optional[float] = None   # the attack entries' eps for one point of the eps curve (None: eval.eps)
    out: dict = dataclasses.field(default_factory=_empty_out)

    @property
    def cfg(self):
        return self.config.eval

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def num_example_images(self) -> int:
        return int(self.cfg.num_example_images)

    def record(self, cfg_data=None, split: Optional[str] = None) -> dict:
        """`data_record` of `cfg_data`/`split` (default: the eval data and split)."""
        return data_record(cfg_data or self.config.data, split or self.split, self.num_examples)

    def data_config(self, **fields) -> ml_collections.ConfigDict:
        """A copy of `config.data` with `fields` replaced (another source evaluated like the eval data)."""
        c = ml_collections.ConfigDict(self.config.data.to_dict())
        c.update(fields)
        return c

    def run_chunks(self, store, compute: Callable, desc: str, *, cfg_data=None, split: Optional[str] = None,
                   postfix: Optional[Callable] = None) -> dict:
        """`chunks.run_chunks` of `compute` over the eval batches of `cfg_data`/`split` (default: the eval
        data and split), chunks finished in `store` skipped; returns the summed chunk results."""
        it, nb = data.eval_batches(cfg_data or self.config.data, split or self.split,
                                   global_batch_size=self.cfg.batch_size, mesh=self.mesh,
                                   num_examples=self.num_examples)
        return chunks.run_chunks(it, nb, batches_per_chunk=self.per_chunk, store=store, compute=compute, desc=desc,
                                 progress=self.progress, postfix=postfix)

    def keep(self, task: str, store) -> None:
        """Records the store's directory and its example images (when saved) in `out` under `task`."""
        self.out["directories"][task] = store.directory
        arrays = store.load_arrays("examples")
        if arrays is not None:
            self.out["examples"][task] = arrays
