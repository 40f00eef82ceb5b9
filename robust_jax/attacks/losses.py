"""Per-example losses that attacks maximise and methods minimise. Shapes: logits [B, K], labels [B]."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels):
    """-log softmax(logits)[label], per example. `labels` int [B] or soft/one-hot [B, K]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    if labels.ndim == logits.ndim:
        return -jnp.sum(labels * logp, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def margin(logits, labels):
    """CW margin loss max_{j != y} z_j - z_y (positive iff misclassified); attacks maximise it."""
    logits = logits.astype(jnp.float32)
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jnp.max(others, axis=-1) - true


def kl_divergence(logits_p, logits_q):
    """KL(p || q) per example, p = softmax(logits_p) (the reference), q = softmax(logits_q)."""
    logp = jax.nn.log_softmax(logits_p.astype(jnp.float32))
    logq = jax.nn.log_softmax(logits_q.astype(jnp.float32))
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


LOSSES = {"ce": cross_entropy, "cw": margin, "margin": margin}


def get(name):
    """A loss by name ('ce', 'cw'/'margin'), or a callable `loss(logits, labels) -> [B]` as is."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; known: {sorted(LOSSES)} or a callable")
    return LOSSES[name]
