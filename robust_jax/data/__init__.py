"""Input data: sources (`digits`, `npz:`, `imagefolder:`, `fake:`, TFDS) and the tf.data pipelines
`train_batches` / `eval_batches` that turn them into global, sharded batches (`data.pipeline`).

TensorFlow runs only here, and is imported on first use of a pipeline function, so that the rest of
robust_jax (attacks, models, methods, corruptions) imports with jax/flax/optax alone.
"""
import importlib

_PIPELINE = ("source_for", "example_shape", "steps_per_epoch", "train_batches", "eval_batches")
__all__ = list(_PIPELINE)


def __getattr__(name):
    if name in _PIPELINE:
        return getattr(importlib.import_module("robust_jax.data.pipeline"), name)
    raise AttributeError(f"module 'robust_jax.data' has no attribute {name!r}")
