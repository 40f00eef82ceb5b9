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


@jax.custom_jvp
def _ratio(num, den):
    """num / den with the derivative (d_num - (num / den) * d_den) / den, so that it vanishes exactly
    where num == den: the two cotangents are t and -1 * t for one t = g / den. The reference's PyTorch
    backward, -g * (num / den) / den, cancels exactly there too; JAX's own division rule (-g * num *
    den^-2) and XLA's rewrite of (a / b) / b into a / (b * b) leave rounding noise instead. Matters for
    DLR: its gradient is zero when the true class is ranked 3rd (loss exactly 1), and a normalised (L2)
    or sign (Linf) step turns noise of 1e-8 into a full step where the reference does not move."""
    return num / den


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
    num, den = primals
    d_num, d_den = tangents
    out = num / den
    return out, (d_num - out * d_den) / den


def dlr(logits, labels):
    """Difference-of-logits-ratio loss of APGD-DLR (Croce & Hein 2020, eq. 3), per example:
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), pi_k the index of the k-th largest logit.
    Positive iff misclassified, and invariant to shifting and (positively) rescaling the logits, so it
    is not fooled by a softmax-saturated model. Needs at least 3 classes. The value equals the
    reference's sort-based form (`pyautoattack` `APGDAttack.dlr_loss`) also under ties."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] < 3:
        raise ValueError(f"dlr needs at least 3 classes, got logits of shape {logits.shape}")
    top = jax.lax.top_k(logits, 3)[0]  # descending
    return _ratio(margin(logits, labels), top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits, labels, target):
    """Targeted DLR of APGD-T, per example: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12),
    t the target class (Croce & Hein 2020, eq. 4; `APGDAttack_targeted.dlr_loss_targeted`).
    Maximising it raises z_t above z_y. Needs at least 4 classes."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] < 4:
        raise ValueError(f"dlr_targeted needs at least 4 classes, got logits of shape {logits.shape}")
    top = jax.lax.top_k(logits, 4)[0]
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
    return _ratio(-(z_y - z_t), top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES = {"ce": cross_entropy, "cw": margin, "margin": margin, "dlr": dlr}


def get(name):
    """A loss by name ('ce', 'cw'/'margin', 'dlr'), or a callable `loss(logits, labels) -> [B]` as is."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; known: {sorted(LOSSES)} or a callable")
    return LOSSES[name]
