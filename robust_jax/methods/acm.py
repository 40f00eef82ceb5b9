"""Activated channel maps (ACMs): the feature mapping MixACM matches between a teacher and a student.

The paper does not give the mapping; these are OUR choices (docs/mixacm.md). For a feature map A [B, H, W, C]
taken at a block output, with a = relu(A) (the "activated" map):

- 'channel' (default): v_c = mean_{h,w} a[h, w, c], q = v / max(|v|_2, eps) per example; the distance of
  two maps is |q_s - q_t|_2^2 per example, in [0, 2] since q >= 0. Spatial sizes may differ.
- 'spatial': m_c = a[:, :, c] flattened, m_c / max(|m_c|_2, eps) per example and channel; the distance is
  (1/C) sum_c |m_c^s - m_c^t|_2^2, in [0, 2]. Both maps need the same H, W and C.

Block taps are what a model sows into its `intermediates` collection, in network order for our staged models
(`stem_out`, then each stage's output: `models.staged`), in name order for others (`tap_names`). Where the
student's and the teacher's channel counts differ, a 1x1 projection (a [C_s, C_t] kernel trained with the
student) maps the student's raw block output to the teacher's width before the mapping (FitNets-style).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

VARIANTS = ("channel", "spatial")
EPS = 1e-8


def activated_channel_map(a, variant: str = "channel"):
    """[B, H, W, C] features -> their ACM: [B, C] ('channel') or [B, C, H*W] ('spatial'), unit L2 norm."""
    if variant not in VARIANTS:
        raise ValueError(f"ACM variant must be one of {VARIANTS}, got {variant!r}")
    if a.ndim != 4:
        raise ValueError(f"ACMs are taken of NHWC feature maps (rank 4), got shape {a.shape}")
    a = jax.nn.relu(a.astype(jnp.float32))
    if variant == "channel":
        v = jnp.mean(a, axis=(1, 2))
    else:
        v = jnp.transpose(a, (0, 3, 1, 2)).reshape(a.shape[0], a.shape[3], -1)
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), EPS)


def acm_distance(a_student, a_teacher, variant: str = "channel"):
    """Per-example squared L2 distance of the two feature maps' ACMs (averaged over channels for 'spatial')."""
    if variant == "spatial" and a_student.shape[1:] != a_teacher.shape[1:]:
        raise ValueError(f"the spatial ACM compares maps of equal size: student {a_student.shape[1:]} vs teacher "
                         f"{a_teacher.shape[1:]} (H, W, C); pick blocks of equal resolution or variant 'channel'")
    if a_student.shape[-1] != a_teacher.shape[-1]:
        raise ValueError(f"ACM of {a_student.shape[-1]} student channels vs {a_teacher.shape[-1]} teacher channels: "
                         "project the student's features first")
    d = jnp.square(activated_channel_map(a_student, variant) - activated_channel_map(a_teacher, variant))
    return jnp.sum(d, -1) if variant == "channel" else jnp.mean(jnp.sum(d, -1), -1)


# ------------------------------------------------------------------------------------------------ block taps
def tap_names(apply_fn):
    """The block taps of the model whose `apply` is `apply_fn`, in network order: `stem_out` then each stage's
    `<stage>_out` for our staged models (`models.staged`); None for other models (their sown names, sorted)."""
    stages = getattr(getattr(apply_fn, "__self__", None), "stage_names", None)
    return None if stages is None else ("stem_out",) + tuple(f"{s}_out" for s in stages)


def taps(intermediates, names=None) -> list:
    """The feature maps sown into `intermediates` (each sow's last value): those of `names` in that order, or
    every top-level one in the collection's (sorted) order."""
    intermediates = dict(intermediates)
    if names is None:
        names = [k for k, v in intermediates.items() if isinstance(v, tuple)]
    missing = [n for n in names if n not in intermediates]
    if missing:
        raise ValueError(f"the model sowed no {missing} into 'intermediates' (it has {sorted(intermediates)})")
    return [intermediates[n][-1] for n in names]


def pick(features: Sequence, blocks: Sequence[int], *, who: str) -> list:
    """`features[b]` for each block index b (negative indices count from the last tap)."""
    n = len(features)
    for b in blocks:
        if not -n <= b < n:
            raise ValueError(f"block {b} does not exist in the {who}, which has {n} block taps (stem and stage "
                             f"outputs; indices 0..{n - 1} or -{n}..-1)")
    return [features[b] for b in blocks]


def project(a, kernel):
    """1x1 convolution without bias: [B, H, W, C_s] @ [C_s, C_t]."""
    return jnp.einsum("bhwc,cd->bhwd", a, kernel.astype(a.dtype))


def projection_name(k: int) -> str:
    """The key of the projection of block pair k in the method's parameters."""
    return f"projection{k}"


def init_projections(key, student_shapes, teacher_shapes, *, projection: bool = True, variant: str = "channel"):
    """{projection_name(k): {'kernel': [C_s, C_t]}} for the block pairs k whose widths differ (LeCun-normal
    init); with `projection` False a width mismatch is an error naming the widths. Shapes are [B, H, W, C]."""
    params = {}
    for k, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
        if variant == "spatial" and tuple(s[1:3]) != tuple(t[1:3]):
            raise ValueError(f"block pair {k}: the spatial ACM needs equal resolutions, student {tuple(s[1:3])} vs "
                             f"teacher {tuple(t[1:3])}; pick other blocks or variant 'channel'")
        if s[-1] == t[-1]:
            continue
        if not projection:
            raise ValueError(f"block pair {k}: the student has {s[-1]} channels, the teacher {t[-1]}; turn the "
                             "projection on (method.mixacm.projection=True) or pick blocks of equal widths")
        kernel = jax.nn.initializers.lecun_normal()(jax.random.fold_in(key, k), (s[-1], t[-1]), jnp.float32)
        params[projection_name(k)] = {"kernel": kernel}
    return params
