"""Plain top-1 accuracy of a model on batches, optionally with a label map and a logit mask: the
evaluator of the clean-data tasks (TFDS corrupted sets, distribution-shift sets).

`label_map[k]` is the model class of the data's label k (e.g. ImageNet-R's 200 folder labels -> the 1000
ImageNet classes); `class_mask` (bool [num_model_classes]) restricts the prediction to those classes (the
ImageNet-R/-A protocol: argmax over the 200 classes the set contains).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import compile_options
from robust_jax.evaluation import chunks


@functools.lru_cache(maxsize=16)
def _forward(model, num_examples: int, masked: bool):
    def fn(variables, x, y, mask, label_map, class_mask):
        logits = model.apply(variables, x, train=False)
        if masked:
            logits = jnp.where(class_mask, logits, -jnp.inf)
        pred = jnp.argmax(logits, -1)
        return jnp.sum(mask * (pred == label_map[y])), pred[:num_examples]
    return compile_options.jit(fn)


def masked_predictions(logits, class_mask: Optional[np.ndarray]):
    """argmax over the classes of `class_mask` only (all classes when None)."""
    logits = jnp.asarray(logits)
    if class_mask is not None:
        logits = jnp.where(jnp.asarray(class_mask), logits, -jnp.inf)
    return jnp.argmax(logits, -1)


def compute_fn(model, variables, *, num_classes: int, label_map=None, class_mask=None, examples_store=None,
               num_examples: int = 0, data_classes: Optional[int] = None):
    """`compute(chunk, first_batch, batches)` for `chunks.run_chunks`: {'n', 'correct'}."""
    if label_map is None:
        label_map = np.arange(max(num_classes, data_classes or 0), dtype=np.int32)
    label_map = jnp.asarray(np.asarray(label_map, np.int32))
    mask_arr = jnp.asarray(np.ones(num_classes, bool) if class_mask is None else np.asarray(class_mask, bool))
    fwd = _forward(model, max(num_examples, 1), class_mask is not None)

    def compute(chunk, first, batches):
        n = correct = 0
        for j, batch in enumerate(batches):
            c, pred = fwd(variables, batch["image"], batch["label"], batch["mask"], label_map, mask_arr)
            if examples_store is not None and num_examples and first + j == 0:
                labels = chunks.host(batch["label"])[:num_examples]
                examples_store.save_arrays("examples", {
                    "labels": np.asarray(label_map)[labels], "clean:images": chunks.host(batch["image"])[:num_examples],
                    "clean:pred": chunks.host(pred)})
            correct += int(jax.device_get(c))
            n += int(round(float(chunks.host(batch["mask"]).sum())))
        return {"n": n, "correct": correct}

    return compute
