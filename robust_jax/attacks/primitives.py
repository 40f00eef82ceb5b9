"""The geometry every attack shares: per-example norms, the eps-ball around x, the box of valid inputs,
steepest-ascent steps and random start points.

Inputs are batches [B, ...]; every function works per example, and per-example quantities come shaped
[B, 1, ..., 1] so that they broadcast against the batch. `bounds=(lo, hi)` is the box the inputs live
in (default [0,1], raw pixels; e.g. (-1, 1) for inputs scaled that way); an attack's iterates are kept in
the eps-ball around x intersected with that box.

Several attacks reproduce a reference implementation to the last bit, and the references write the
same geometry in different arithmetic: the order of a multiply and a divide, the guard added to a norm
before dividing by it (1e-12, 1e-10, 1e-7 or none), whether an L2 perturbation is rescaled only when it
lies outside the ball, whether the Linf ball is applied to the perturbation or as bounds on the point.
These choices are parameters (`guard`, `scale_first`, `linf_rule`, `l2_rule`), documented where they
appear, so each attack keeps its reference's numbers; `project` and `ascent_step` default to plain PGD's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
UNIT_BOX = (0.0, 1.0)
GUARD = 1e-12  # added to a norm before dividing by it, so that a zero vector stays zero
LINF_RULES = ("delta", "clamp")
L2_RULES = ("factor", "radius", "outside")


# ------------------------------------------------------------------------------------------- norms
def per_example_norm(v, norm: str = "l2", *, keepdims: bool = True):
    """Linf (max |v|) or L2 norm of each example, over all but the batch axis.

    keepdims=True: shape [B, 1, ..., 1], to broadcast against v. keepdims=False: shape [B], reduced over
    the flattened rows [B, n] (the form of the attacks that work on flattened rows)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not keepdims:
        v = v.reshape(v.shape[0], -1)
        axes = (1,)
    else:
        axes = tuple(range(1, v.ndim))
    if norm == "linf":
        return jnp.max(jnp.abs(v), axis=axes, keepdims=keepdims)
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=keepdims))


def scale_to_norm(v, radius, *, norm: str, guard: float = GUARD, scale_first: bool = False):
    """radius * v / (|v| + guard) per example: v rescaled to norm `radius` (a zero v stays zero).

    `radius` is a scalar or per example ([B, 1, ..., 1]). The two roundings of the same formula differ in
    the last bit: scale_first=True computes (radius * v) / (|v| + guard), False radius * (v / (|v| + guard))."""
    n = per_example_norm(v, norm) + guard
    return radius * v / n if scale_first else radius * (v / n)


def ascent_step(grad, *, norm: str, step_size, guard: float = GUARD, scale_first: bool = True):
    """The steepest-ascent step of length `step_size` in the norm: step_size * sign(grad) (Linf) or
    grad rescaled to L2 norm step_size (`scale_to_norm`). step_size may be per example."""
    if norm == "linf":
        return step_size * jnp.sign(grad)
    return scale_to_norm(grad, step_size, norm="l2", guard=guard, scale_first=scale_first)


# --------------------------------------------------------------------------------- box and ball
def clip_to_box(v, bounds=UNIT_BOX):
    """v clipped into the box [lo, hi] of valid inputs, coordinate-wise."""
    lo, hi = bounds
    return jnp.clip(v, lo, hi)


def project_linf_ball(z, x, eps, *, rule: str = "delta"):
    """The nearest point to z in the Linf ball of radius eps around x (per coordinate), written as
    'delta': x + clip(z - x, -eps, eps), or 'clamp': clip(z, x - eps, x + eps). They differ by rounding
    only: 'clamp' returns coordinates already inside unchanged, 'delta' passes them through z - x."""
    if rule == "delta":
        return x + jnp.clip(z - x, -eps, eps)
    if rule == "clamp":
        return jnp.clip(z, x - eps, x + eps)
    raise ValueError(f"linf_rule must be one of {LINF_RULES}, got {rule!r}")


def project_l2_ball(z, x, eps, *, rule: str = "factor", guard: float = GUARD):
    """z moved into the L2 ball of radius eps around x (per example), with delta = z - x, n = |delta|_2:

    'factor':  x + delta * min(1, eps / (n + guard))
    'radius':  x + delta / (n + guard) * min(eps, n)
    'outside': x + delta * eps / (n + guard) where n > eps, else z (delta untouched)

    All three are the Euclidean projection up to rounding and the guard, which the references choose
    differently (see the module docstring); eps may be per example."""
    delta = z - x
    n = per_example_norm(delta, "l2")
    if rule == "factor":
        return x + delta * jnp.minimum(1.0, eps / (n + guard))
    if rule == "radius":
        return x + delta / (n + guard) * jnp.minimum(eps, n)
    if rule == "outside":
        return x + jnp.where(n > eps, delta * eps / (n + guard), delta)
    raise ValueError(f"l2_rule must be one of {L2_RULES}, got {rule!r}")


def project(z, x, *, norm: str, eps, bounds=UNIT_BOX, linf_rule: str = "delta", l2_rule: str = "factor",
            guard: float = GUARD):
    """z moved into the eps-ball around x (`project_linf_ball` / `project_l2_ball`), then clipped into
    the box. The result lies in both sets whenever x lies in the box: clipping into a box that holds x
    moves no coordinate away from x. For Linf it is the nearest point of the intersection."""
    if norm == "linf":
        inside = project_linf_ball(z, x, eps, rule=linf_rule)
    elif norm == "l2":
        inside = project_l2_ball(z, x, eps, rule=l2_rule, guard=guard)
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return clip_to_box(inside, bounds)


# ------------------------------------------------------------------------------------ random starts
def uniform_start(key, x, *, norm: str, eps, bounds=UNIT_BOX):
    """A point uniform in the eps-ball around x, clipped into the box. Linf: x + U[-eps, eps]^d; L2: a
    uniform direction (normalised Gaussian) times eps * U^(1/d), d the number of coordinates per example,
    which makes the point uniform in the ball's volume."""
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    else:
        k_dir, k_radius = jax.random.split(key)
        direction = scale_to_norm(jax.random.normal(k_dir, x.shape, x.dtype), 1.0, norm="l2")
        d = x[0].size
        radius = eps * jax.random.uniform(k_radius, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype) ** (1.0 / d)
        delta = direction * radius
    return clip_to_box(x + delta, bounds)


def gaussian_start(key, x, *, std):
    """x + std * N(0, I), NOT clipped into the box, as the TRADES/MART references start; the attack's
    first projection brings the point into the ball and the box."""
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def to_sphere(x, delta, *, norm: str, radius, bounds=UNIT_BOX, guard: float = GUARD, scale_first: bool = False):
    """x + delta rescaled to norm `radius` (`scale_to_norm`), clipped into the box: a point on the
    sphere of radius `radius` around x, as far as the box allows."""
    return clip_to_box(x + scale_to_norm(delta, radius, norm=norm, guard=guard, scale_first=scale_first), bounds)


def direction_start(key, x, *, norm: str, radius, bounds=UNIT_BOX, guard: float = GUARD,
                    scale_first: bool = False):
    """x + radius * t / (|t| + guard), clipped into the box (`to_sphere` of a random t): a start ON the
    sphere of radius `radius`, as AutoAttack's APGD (radius eps) and FAB (eps / 2) and DAT (L2, eps)
    start. t ~ U[-1, 1]^d for Linf (a point on the Linf sphere, not uniform on it), t ~ N(0, I) for L2
    (uniform on the L2 sphere)."""
    if norm == "linf":
        t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    else:
        t = jax.random.normal(key, x.shape, x.dtype)
    return to_sphere(x, t, norm=norm, radius=radius, bounds=bounds, guard=guard, scale_first=scale_first)
