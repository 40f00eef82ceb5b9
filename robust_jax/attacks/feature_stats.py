"""AdvBN's inner maximisation: sign-gradient ascent over feature-statistics factors (`models.advbn`).

    s <- clip(s + step_size * sign(d loss / d s), 1 - eps, 1 + eps)       `steps` times, from s = 1

over every leaf of the perturbation tree (the `advbn` collection: s_mu and s_sigma of each AdvBN layer),
in one `jax.lax.fori_loop`. As the reference: no random start, no restarts, no early stop; sign(0) = 0, so
coordinates with a zero gradient stay where they are; with eps = 1.1 the box is [-0.1, 2.1], so a factor
may turn negative. The model's mode during the attack is the caller's choice (the AdvBN method: eval).
Returns the final factors with `stop_gradient`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

DEFAULTS = dict(steps=6, step_size=0.2, eps=1.1)  # the reference's n_repeats, fgsm_step, scale_eps


def maximize(loss_fn: Callable, perturbation, *, steps: int = 6, step_size: float = 0.2, eps: float = 1.1):
    """Maximises `loss_fn(perturbation) -> scalar` by `steps` projected sign-ascent steps (see module doc)."""
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if step_size < 0 or eps < 0:
        raise ValueError(f"step_size and eps must be >= 0, got step_size={step_size}, eps={eps}")
    grad_fn = jax.grad(loss_fn)

    def body(_, s):
        g = grad_fn(s)
        return jax.tree.map(lambda v, gv: jnp.clip(v + step_size * jnp.sign(gv), 1.0 - eps, 1.0 + eps), s, g)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, int(steps), body, perturbation))
