"""The L2 attack of Discrete Adversarial Training (Mao et al. 2022), as easyrobust's DAT step runs it.

It differs from `pgd` in three details that the reference fixes and that change the numbers:
- the random start is taken with probability `start_prob` for the whole batch (one draw), and lies ON
  the eps-sphere: x0 = c + eps * n / (|n|_2 + 1e-10), n ~ N(0, I) per example, clipped into the box;
- the loss is a callable of (x, key), so a model in train mode draws fresh dropout / drop-path masks at
  every gradient evaluation, as a PyTorch model in `train()` does;
- the step is x + step_size * g / (|g|_2 + 1e-10) without clipping, then the projection scales delta
  only when |delta|_2 > eps, by eps / (|delta|_2 + 1e-7), and clips c + delta into the box ([0, 1]).
These are the shared `primitives` with the reference's constants and arithmetic as their parameters.

`grad_at` maps the iterate to the point where the gradient is taken: the identity for the reference
(the gradient at x_t itself), or the VQGAN quantiser Q for the paper's formulation, where the gradient
at Q(x_t) stands in for the gradient of L(Q(x_t)) (straight-through; the VQGAN is never differentiated).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax.attacks import primitives as prim
from robust_jax.checks import check_bounds, check_images

STEP_EPS = 1e-10  # the reference's constants, kept so the step matches it to the last bit
PROJECT_EPS = 1e-7


def sphere_start(key, center, *, eps: float, start_prob: float, bounds=prim.UNIT_BOX):
    """With probability `start_prob` (one draw for the batch): center + eps * n / (|n|_2 + 1e-10),
    n ~ N(0, I) per example (a point on the eps-sphere), clipped into the box; otherwise `center` itself."""
    k_coin, k_noise = jax.random.split(key)
    start = prim.direction_start(k_noise, center, norm="l2", radius=eps, bounds=bounds, guard=STEP_EPS,
                                 scale_first=True)
    return jnp.where(jax.random.bernoulli(k_coin, start_prob), start, center)


def project_l2(x, center, *, eps: float, bounds=prim.UNIT_BOX):
    """delta = x - center scaled by eps / (|delta|_2 + 1e-7) where |delta|_2 > eps (untouched inside
    the ball); then center + delta clipped into the box."""
    return prim.project(x, center, norm="l2", eps=eps, bounds=bounds, l2_rule="outside", guard=PROJECT_EPS)


def ascent(x, g, *, step_size: float):
    """x + step_size * g / (|g|_2 + 1e-10), not clipped: the reference's normalised gradient step."""
    return x + prim.ascent_step(g, norm="l2", step_size=step_size, guard=STEP_EPS, scale_first=True)


def discrete_l2_attack(loss_fn: Callable, center, key, *, eps: float = 0.1, step_size: float = 0.1,
                       steps: int = 1, start_prob: float = 0.8, grad_at: Optional[Callable] = None,
                       bounds=prim.UNIT_BOX):
    """Maximises `loss_fn(x, key) -> scalar` (the batch-mean loss) around `center` in the L2 ball.

    Returns the perturbed images (stop_gradient'ed). DAT calls it with center = Q(x) and then trains on
    Q(result). `steps` > 1 repeats step + projection (the reference uses one step). bounds=(lo, hi): the
    box of valid inputs, which `center` must lie in and every iterate is clipped into.
    """
    bounds = check_bounds(bounds)
    check_images(center, "center", bounds)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    grad_at = grad_at or (lambda x: x)
    k_start, k_steps = jax.random.split(key)
    x0 = sphere_start(k_start, center, eps=eps, start_prob=start_prob, bounds=bounds)

    def body(i, x):
        g = jax.grad(loss_fn)(grad_at(x), jax.random.fold_in(k_steps, i))
        return project_l2(ascent(x, g, step_size=step_size), center, eps=eps, bounds=bounds)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x0))
