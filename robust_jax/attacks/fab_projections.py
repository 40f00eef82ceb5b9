"""Projections onto a hyperplane intersected with a box [lo, hi]^n, batched over rows: FAB's inner step.

Each row is a problem `min_d ||d||_p  s.t.  <w, t + d> = b,  t + d in [0,1]^n`, solved exactly for p = inf and
p = 2 (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
Sec. 3.1). When the hyperplane does not meet the box, the answer is the box point that gets closest to it
(the corner in the direction of -sign(w) for Linf, the fully clipped gradient path for L2).

Both solutions are piecewise linear in one scalar (the Linf radius lambda, or the L2 step length along
-w): moving coordinate i costs a cap (the distance to the face of the box it runs into), so the change of
<w, t + d> as a function of the scalar has breakpoints at these caps. Sorting the caps once, cumulative
sums give that function at every breakpoint, and a fixed-length bisection (ceil(log2 n) halvings, static)
finds the segment holding the root, whose linear piece is then solved in closed form. Rows are handled
together with static shapes: every branch (root before the first breakpoint, root inside, infeasible)
is computed for every row and the applicable one selected, where the PyTorch reference (AutoAttack's
`fab_projections.py`) indexes the subsets. The sorts go through int32 keys (`sort_keys.argsort_rows`, the
permutation of a stable float argsort, faster on XLA:CPU: benchmarks/README.md, "AutoAttack parity").

The arithmetic (sign conventions, the 1e12 sentinels for coordinates with w ~ 0, the bisection bounds)
follows the reference so that results agree to float rounding; ties in the sorts do not change the
answer (the function values at tied breakpoints coincide). L1 (`projection_l1`) is not ported.

The solvers work in the unit box [0,1]^n; another box [lo, hi]^n is mapped onto it affinely (`_in_box`),
and the unit box is solved directly, so that its numbers are the reference's.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robust_jax.attacks.primitives import UNIT_BOX
from robust_jax.attacks.sort_keys import argsort_rows

_BIG = 1e12  # sentinel breakpoint for coordinates whose weight is ~0 (they never bind)


def _gather(v, idx):
    return jnp.take_along_axis(v, idx, axis=1)


def _bisect(rows: int, n: int, goes_right):
    """Largest k in [0, n-1] with goes_right(k) (given goes_right(0) holds and goes_right(n-1) does not),
    per row, by the reference's fixed ceil(log2 n) halvings of [lb, ub]. goes_right maps int [N, 1] -> bool [N]."""

    def halve(_, bounds):
        lb, ub = bounds
        mid = (lb + ub) // 2
        right = goes_right(mid[:, None])
        return jnp.where(right, mid, lb), jnp.where(right, ub, mid)

    lb = jnp.zeros((rows,), jnp.int32)
    ub = jnp.full((rows,), n - 1, jnp.int32)
    lb, _ = jax.lax.fori_loop(0, math.ceil(math.log2(n)) if n > 1 else 0, halve, (lb, ub))
    return lb


def _in_box(solve_unit, t, w, b, bounds):
    """`solve_unit` (a solver on [0,1]^n) applied to the box [lo, hi]^n. With t = lo + s u, s = hi - lo,
    the constraint <w, t + d> = b reads <s w, u + e> = b - lo sum(w) with u + e in [0,1]^n and d = s e;
    every norm of d is s times that of e, so the minimiser maps onto the minimiser."""
    lo, hi = bounds
    if (lo, hi) == UNIT_BOX:
        return solve_unit(t, w, b)
    s = hi - lo
    return s * solve_unit((t - lo) / s, s * w, b - lo * jnp.sum(w, axis=1))


def project_linf(t, w, b, *, bounds=UNIT_BOX):
    """Linf-minimal d with <w, t + d> = b and t + d in the box (or the closest box point), per row.

    t, w: [N, n]; b: [N]; bounds: (lo, hi), default [0,1]. Returns d [N, n], zero where w == 0."""
    return _in_box(_project_linf_unit, t, w, b, bounds)


def project_l2(t, w, b, *, bounds=UNIT_BOX):
    """L2-minimal d with <w, t + d> = b and t + d in the box (or the closest box point), per row.

    t, w: [N, n]; b: [N]; bounds: (lo, hi), default [0,1]. Returns d [N, n], zero where |w| <= 1e-8 (in
    the unit box's coordinates)."""
    return _in_box(_project_l2_unit, t, w, b, bounds)


def _project_linf_unit(t, w, b):
    """`project_linf` on [0,1]^n.

    A radius lambda moves every coordinate by min(lambda, cap_i) towards the box face that lowers the
    (sign-normalised) residual <w, t> - b; cap_i is that face's distance.
    """
    n = t.shape[1]
    sign = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    b = b * sign
    a = (w < 0).astype(t.dtype)  # face each coordinate moves to: 1 if w < 0 else 0
    nonzero = (w != 0).astype(t.dtype)
    d = (a - t) * nonzero  # the full move to that face
    cap = a - t * (2 * a - 1)  # |a - t|
    order = argsort_rows(cap)
    desc = order[:, ::-1]  # largest cap first

    b = b - jnp.sum(w * t, axis=1)  # required change of <w, .>: <= 0
    b0 = jnp.sum(w * d, axis=1)  # largest achievable change (all coordinates at their face)
    w_desc = _gather(w, desc)
    s = jnp.cumsum(jnp.abs(w_desc), axis=1)  # |w| mass of the k+1 largest caps (still free at radius cap_(k))
    sb = jnp.cumsum(-w_desc * _gather(d, desc), axis=1) + b0[:, None]  # change from the saturated rest
    cap_desc = _gather(cap, desc)

    # root below the smallest cap: every coordinate moves by lambda
    root_first = b - (sb[:, -1] - s[:, -1] * cap_desc[:, -1]) > 0
    inside = (b - b0 > 0) & ~root_first  # reachable, root past the smallest cap

    def goes_right(k):
        return b - (_gather(sb, k) - _gather(s, k) * _gather(cap_desc, k))[:, 0] > 0

    k = _bisect(t.shape[0], n, goes_right)[:, None]

    lmbd_first = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0.0)[:, None]
    d_first = (2 * a - 1) * lmbd_first
    lmbd_in = jnp.maximum((b - _gather(sb, k)[:, 0]) / (-_gather(s, k)[:, 0]), 0.0)[:, None]
    d_in = jnp.minimum(lmbd_in, d) * a + jnp.maximum(-lmbd_in, d) * (1 - a)
    d = jnp.where(root_first[:, None], d_first, jnp.where(inside[:, None], d_in, d))
    return d * nonzero


def _project_l2_unit(t, w, b):
    """`project_l2` on [0,1]^n.

    The solution is d_i = -w_i * min(alpha, r_i) for a step alpha along -w (sign-normalised), r_i being the
    step at which coordinate i hits its face.
    """
    n = t.shape[1]
    c = jnp.sum(w * t, axis=1) - b
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    c = c * sign  # residual, >= 0
    live = jnp.abs(w) > 1e-8

    r = jnp.clip(jnp.maximum(t / w, (t - 1) / w), -_BIG, _BIG)
    r = jnp.where(live, r, _BIG)
    r = jnp.where(r == -_BIG, _BIG, r)
    order = argsort_rows(r)
    rs = _gather(r, order)
    rs_next = jnp.concatenate([rs[:, 1:], jnp.zeros_like(rs[:, :1])], axis=1)
    rs = jnp.where(rs == _BIG, 0.0, rs)
    rs_next = jnp.where(rs_next == _BIG, 0.0, rs_next)

    w2s = _gather(jnp.square(w), order)
    w2_total = jnp.sum(w2s, axis=1, keepdims=True)
    w2_free = w2_total - jnp.cumsum(w2s, axis=1)  # squared mass still moving past breakpoint k
    d = -(r * w) * live  # every coordinate saturated
    # s[k] = change of <w, .> when the step reaches breakpoint rs[k] (s has n + 1 entries)
    start = -w2_total * rs[:, :1]
    s = jnp.concatenate([start, jnp.cumsum((rs - rs_next) * w2_free, axis=1) + start], axis=1)

    root_first = s[:, 0] + c < 0  # root before any coordinate saturates
    unreachable = jnp.sum(d * w, axis=1) + c > 0
    inside = ~(root_first | unreachable)

    def goes_right(k):
        return _gather(s, k)[:, 0] + c > 0

    k = _bisect(t.shape[0], n, goes_right)[:, None]

    d_first = -(c / w2_total[:, 0])[:, None] * w
    free_k = _gather(w2_free, k)[:, 0]
    alpha = (_gather(s, k)[:, 0] + c) / free_k + _gather(rs, k)[:, 0]
    alpha = jnp.where(free_k == 0, 0.0, alpha)[:, None]
    saturated = (alpha > r).astype(t.dtype)
    d_in = d * saturated - alpha * w * (1 - saturated)
    d = jnp.where(root_first[:, None], d_first, jnp.where(inside[:, None], d_in, d))
    return d * live
