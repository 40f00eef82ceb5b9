"""The tf.data input pipelines: `train_batches` (infinite, shuffled, augmented, resumable) and `eval_batches`
(every example once, padded with `mask == 0`), both yielding global batches
`{'image': float32 [B,H,W,C] in [0,1], 'label': int32 [B]}` sharded over the mesh's `data` axis.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import jax
import numpy as np

from robust_jax import parallel
from robust_jax.data import augment, randaugment
from robust_jax.data.sources import get_source
from robust_jax.data.tf_runtime import tf, without_autograph


def source_for(cfg):
    """The configured source, checked against `cfg.num_classes`."""
    src = get_source(cfg.name, cfg.data_dir)
    if cfg.num_classes and cfg.num_classes != src.num_classes:
        raise ValueError(f"config data.num_classes={cfg.num_classes} but dataset {cfg.name!r} has "
                         f"{src.num_classes} classes")
    return src


def _process_shard():
    return jax.process_index(), jax.process_count()


def example_shape(cfg) -> tuple:
    """[H, W, C] of one preprocessed evaluation example (what the model will see)."""
    src = source_for(cfg)
    ex = next(iter(src.split(cfg.eval_split).dataset.take(1)))
    image = augment.eval_preprocess(ex["image"], kind=cfg.eval_preprocess, size=cfg.image_size)
    return tuple(int(d) for d in image.shape)


def steps_per_epoch(cfg, global_batch_size: int) -> int:
    """Optimiser steps in one pass over the training split (drop remainder)."""
    local = source_for(cfg).split(cfg.train_split, _process_shard(), drop_remainder=True).num_examples
    steps = local // parallel.local_batch_size(global_batch_size)
    if steps == 0:
        raise ValueError(f"batch size {global_batch_size} is larger than the training split of {cfg.name!r}")
    return steps


def _extra_augmentations(cfg, normalization):
    """(RandAugment policy dict or None, random-erasing kwargs or None) from `data.randaugment` and
    `data.random_erasing`; erasing draws its noise in the model's normalised space, so it needs
    `normalization` = (mean, std) of the model."""
    policy = randaugment.parse_policy(cfg.randaugment) if cfg.randaugment else None
    prob = cfg.random_erasing
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"data.random_erasing is a probability, got {prob}")
    erasing = None
    if prob > 0:
        if normalization is None:
            raise ValueError("data.random_erasing > 0 needs the model's mean/std (train_batches(normalization=...))")
        erasing = dict(prob=prob, mean=tuple(normalization[0]), std=tuple(normalization[1]))
    return policy, erasing


def train_batches(cfg, *, global_batch_size: int, mesh, seed: int, start_step: int = 0,
                  normalization=None) -> Iterator[dict]:
    """Infinite stream of training batches. Epoch e is shuffled with seed (seed, e) and example i of it
    (on process p of P) augmented with seed (seed, (e * P + p) * n + i): the stream from `start_step`
    equals the tail of the stream from 0, which is what lets an interrupted run resume to the same result.
    `normalization`: the model's (mean, std), needed by random erasing."""
    src = source_for(cfg)
    policy, erasing = _extra_augmentations(cfg, normalization)
    index, count = _process_shard()
    split = src.split(cfg.train_split, (index, count), drop_remainder=True)
    local_bs = parallel.local_batch_size(global_batch_size)
    n = split.num_examples
    per_epoch = n // local_bs
    if per_epoch == 0:
        raise ValueError(f"batch size {global_batch_size} is larger than the training split of {cfg.name!r}")
    size = cfg.image_size
    base = split.encoded.cache() if cfg.cache else split.encoded
    decode = split.decode or (lambda ex: ex)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        ds = base.shuffle(min(n, cfg.shuffle_buffer), seed=seed * 100_003 + epoch,
                          reshuffle_each_iteration=False)
        ds = ds.skip(skip * local_bs).enumerate(start=skip * local_bs)

        def prep(i, ex, epoch=epoch):
            ex = decode(ex)
            s = tf.stack([tf.constant(seed, tf.int64), (tf.cast(epoch, tf.int64) * count + index) * n + i])
            image = augment.train_preprocess(ex["image"], s, kind=cfg.train_augment, size=size,
                                             padding=cfg.crop_padding, randaugment=policy,
                                             erasing=erasing)
            return {"image": image, "label": ex["label"]}

        ds = ds.map(without_autograph(prep), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(local_bs, drop_remainder=True).prefetch(2)
        for batch in ds.as_numpy_iterator():
            yield parallel.to_global(batch, mesh)
        epoch, skip = epoch + 1, 0


def eval_batches(cfg, split: str, *, global_batch_size: int, mesh, num_examples: Optional[int] = None):
    """(iterator, num_batches) over `split`, each example once: all of it, or `num_examples` of it chosen by
    `cfg.eval_subset` — 'first' (the first ones) or 'spread' (every k-th, k = size // num_examples, so a
    split stored sorted by class still gives every class, in a fixed shuffled order so that the first batch,
    whose images the report shows, is mixed too). Batches carry `mask` (1 real, 0 padding) so
    metrics can ignore the padding of the last batch."""
    src = source_for(cfg)
    index, count = _process_shard()
    total = src.split(split).num_examples
    subset = cfg.eval_subset
    if subset not in ("first", "spread"):
        raise ValueError(f"data.eval_subset must be 'first' or 'spread', got {subset!r}")
    stride = 1
    if num_examples and num_examples < total:
        stride = total // num_examples if subset == "spread" else 1
        total = num_examples
    local_bs = parallel.local_batch_size(global_batch_size)
    bounds = np.linspace(0, total, count + 1).astype(int)
    largest = int(np.max(np.diff(bounds)))
    num_batches = max(1, math.ceil(largest / local_bs))
    part = src.split(split)
    ds = part.encoded
    if stride > 1:  # same order on every process: the shuffle is seeded and reads the whole (small) subset
        ds = ds.shard(stride, 0).take(total).shuffle(total, seed=0, reshuffle_each_iteration=False)
    ds = ds.skip(int(bounds[index])).take(int(bounds[index + 1] - bounds[index]))
    size = cfg.image_size
    decode = part.decode or (lambda ex: ex)

    def prep(ex):
        ex = decode(ex)
        return {"image": augment.eval_preprocess(ex["image"], kind=cfg.eval_preprocess, size=size),
                "label": ex["label"], "mask": tf.constant(1.0)}

    ds = ds.map(without_autograph(prep), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def batches():
        it = ds.batch(local_bs).prefetch(2).as_numpy_iterator()
        for _ in range(num_batches):
            batch = next(it, None)
            yield parallel.to_global(_pad(batch, local_bs, ds.element_spec), mesh)

    return batches(), num_batches


def _pad(batch, size, spec):
    """Pads a (possibly missing or short) local batch to `size` examples with mask 0."""
    if batch is None:
        return {k: np.zeros((size,) + tuple(s.shape), s.dtype.as_numpy_dtype) for k, s in spec.items()
                if s.shape.is_fully_defined()} | _empty_images(spec, size)
    n = len(batch["label"])
    if n == size:
        return batch
    return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def _empty_images(spec, size):
    shape = spec["image"].shape
    if not shape.is_fully_defined():
        raise ValueError("eval images must have a fixed size: set data.eval_preprocess to resize/crop")
    return {"image": np.zeros((size,) + tuple(shape), np.float32)}
