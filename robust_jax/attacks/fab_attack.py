"""FAB: the fast adaptive boundary attack (Croce & Hein 2020, arXiv:1907.02044), Linf and L2, untargeted
and targeted (FAB-T, as in AutoAttack), a JAX port of the algorithm of AutoAttack's `FABAttack_PT`.

FAB looks for the adversarial point closest to x. Each step linearises the classifier at the current
point x1: for a class k the decision boundary f_k = f_y becomes the hyperplane
<g, z> = <g, x1> - (f_k - f_y)(x1), g = grad(f_k - f_y)(x1). Untargeted FAB picks the class whose
hyperplane is nearest, |f_k - f_y| / ||g||_dual; FAB-T uses the class ranked `target_rank`-th by the
clean logits (2 = the runner-up). Both x1 and the original x are projected onto that hyperplane within
the box `bounds` ([0,1] by default; `fab_projections`), giving d1 and d2, and the next point mixes the
two overshot projections, biased towards the one from x to stay close to it:

    alpha = min(max(|d1| / (|d1| + |d2|), 0), alpha_max)
    x1 <- clip((x1 + eta d1)(1 - alpha) + (x + eta d2) alpha, lo, hi).

When x1 is misclassified it is recorded if it is the smallest-norm adversarial point so far, and x1 steps
back towards x: x1 <- x + beta (x1 - x). A run is one `lax.fori_loop` over `steps`; per iteration one
forward pass with one backward pass (FAB-T) or K batched backward passes (untargeted, K classes: memory
K x the batch's input gradients, as the reference's), then one forward pass for the prediction; the
restarts are an outer `fori_loop`, so compile time grows with neither. Restart 0 starts at x; the
others at x plus a random perturbation of norm eps/2 (Linf: uniform noise scaled to max-norm eps/2; L2:
Gaussian noise scaled to L2 norm eps/2), clipped into the box, as the reference does.

Fixed-eps evaluation (AutoAttack): an example counts as fooled when a run's best point is misclassified
and within eps; the first such run's point is kept, later restarts do not replace it (the reference only
re-attacks examples still robust). The others, and examples misclassified from the start, return x
unchanged.

Deliberate differences from the reference, none of which changes what is computed:
- all examples run every restart with static shapes, and the result is masked to the examples that
  were still robust (the reference gathers the subset); the random start draws come from `jax.random`,
  so restarts after the first cannot match the reference's draws;
- logit-difference gradients come from one batched `jax.vjp` with cotangents e_k - e_y (vmapped over the
  classes when untargeted) instead of one backward pass per class followed by subtraction: equal up to
  float rounding;
- one target rank per call (AutoAttack's FAB-T loops over ranks 2..n_target_classes+1 outside, attacking
  the points still robust; calling `fab` per rank and keeping the first success is the same);
- L1 is not ported.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from robust_jax.attacks import primitives as prim
from robust_jax.attacks.fab_projections import project_l2, project_linf
from robust_jax.checks import check_bounds, check_images, check_labels

NORMS = prim.NORMS
_NOT_FOUND = 1e10  # the reference's "no adversarial point yet" norm


def _row_norm(v, norm):
    """Per-example norm, shape [B]."""
    return prim.per_example_norm(v, norm, keepdims=False)


def _diff_logits_grads(logits_fn, x1, y, target):
    """(df [B, C], dg [B, C, n]): logit differences f_k - f_y and their input gradients at x1.
    Untargeted (target None): all K classes, with df = 1e10 at k = y so y is never chosen; targeted: the
    single difference f_target - f_y."""
    logits, vjp = jax.vjp(logits_fn, x1)
    num_classes = logits.shape[-1]
    onehot_y = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
    f_y = jnp.sum(logits * onehot_y, axis=1, keepdims=True)
    if target is None:
        cotangents = jnp.eye(num_classes, dtype=logits.dtype)[:, None, :] - onehot_y[None]  # [K, B, K]
        dg = jax.vmap(lambda ct: vjp(ct)[0])(cotangents)  # [K, B, ...]
        dg = jnp.moveaxis(dg.reshape(num_classes, x1.shape[0], -1), 0, 1)
        df = jnp.where(onehot_y > 0, _NOT_FOUND, logits - f_y)
    else:
        onehot_t = jax.nn.one_hot(target, num_classes, dtype=logits.dtype)
        dg = vjp(onehot_t - onehot_y)[0].reshape(x1.shape[0], 1, -1)
        df = jnp.sum(logits * onehot_t, axis=1, keepdims=True) - f_y
    return df.astype(jnp.float32), dg


def _single_run(logits_fn, x, y, x_start, target, *, norm, steps, alpha_max, eta, beta, bounds):
    """One FAB run from x_start: (best adversarial point [B, ...], its norm [B], 1e10 where none found)."""
    batch = x.shape[0]
    bcast = (-1,) + (1,) * (x.ndim - 1)
    solver = project_linf if norm == "linf" else project_l2
    x_flat = x.reshape(batch, -1)

    def step(_, state):
        x1, adv, best = state
        df, dg = _diff_logits_grads(logits_fn, x1, y, target)
        dual = jnp.sum(jnp.abs(dg), -1) if norm == "linf" else jnp.sqrt(jnp.sum(jnp.square(dg), -1))
        k = jnp.argmin(jnp.abs(df) / (1e-12 + dual), axis=1)  # nearest linearised boundary
        w = jnp.take_along_axis(dg, k[:, None, None], axis=1)[:, 0]
        b = -jnp.take_along_axis(df, k[:, None], axis=1)[:, 0] + jnp.sum(w * x1.reshape(batch, -1), axis=1)
        d = solver(jnp.concatenate([x1.reshape(batch, -1), x_flat]), jnp.concatenate([w, w]),
                   jnp.concatenate([b, b]), bounds=bounds)
        size = jnp.maximum(_row_norm(d, norm), 1e-8)
        a1, a2 = size[:batch], size[batch:]
        alpha = jnp.minimum(jnp.maximum(a1 / (a1 + a2), 0.0), alpha_max).reshape(bcast)
        d1, d2 = d[:batch].reshape(x.shape), d[batch:].reshape(x.shape)
        x1 = prim.clip_to_box((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha, bounds)

        is_adv = jnp.argmax(logits_fn(x1), axis=-1) != y
        dist = _row_norm(x1 - x, norm)
        better = is_adv & (dist < best)
        adv = jnp.where(better.reshape(bcast), x1, adv)
        best = jnp.where(better, dist, best)
        x1 = jnp.where(is_adv.reshape(bcast), x + (x1 - x) * beta, x1)  # step back towards x
        return x1, adv, best

    init = (x_start, x, jnp.full((batch,), _NOT_FOUND, jnp.float32))
    _, adv, best = jax.lax.fori_loop(0, steps, step, init)
    return adv, best


def random_start(key, x, *, norm: str, eps, bounds=prim.UNIT_BOX):
    """The reference's restart point: x + (eps/2) * t / ||t|| (Linf: t ~ U[-1,1]^n; L2: t ~ N(0, I)),
    clipped into the box (`primitives.direction_start`, scaled before dividing by the bare norm, as
    the reference rounds it)."""
    return prim.direction_start(key, x, norm=norm, radius=0.5 * eps, bounds=bounds, guard=0.0, scale_first=True)


def _check(norm, eps, steps, restarts, key, targeted, target_rank, num_classes):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (L1 FAB is not ported), got {norm!r}")
    if not isinstance(eps, jax.core.Tracer) and eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    for name, v in (("steps", steps), ("restarts", restarts)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v}")
    if restarts > 1 and key is None:
        raise ValueError(f"restarts={restarts} draws random starts: pass a jax.random key")
    if targeted and not isinstance(target_rank, jax.core.Tracer) and not 2 <= target_rank <= num_classes:
        raise ValueError(f"target_rank must be in [2, {num_classes}] (1 is the true class), got {target_rank}")


def fab(logits_fn: Callable, x, y, key, *, norm: str, eps, steps: int = 100, restarts: int = 1,
        targeted: bool = False, target_rank=2, alpha_max: float = 0.1, eta: float = 1.05,
        beta: float = 0.9, bounds=prim.UNIT_BOX):
    """FAB (targeted=False) or FAB-T (targeted=True) at a fixed budget `eps`.

    Returns x_adv: per example, the smallest-norm misclassified point of the first run (restart) whose
    point lies within eps, or x unchanged when no run found one (or x was misclassified already).
    `target_rank` (may be traced) picks FAB-T's class by the clean logits: 2 = the runner-up. `key`
    drives the random starts of restarts 1, 2, ... (restart 0 starts at x; `key` may be None when
    restarts <= 1). bounds=(lo, hi): the box of valid inputs (default [0,1]); x must lie in it, and the
    boundary projections and every iterate stay in it.
    """
    norm = norm.lower()
    bounds = check_bounds(bounds)
    check_images(x, "x", bounds)
    check_labels(y, x.shape[0], "y")
    logits0 = logits_fn(x)
    check_labels(y, x.shape[0], "y", num_classes=logits0.shape[-1])
    _check(norm, eps, steps, restarts, key, targeted, target_rank, logits0.shape[-1])
    bcast = (-1,) + (1,) * (x.ndim - 1)
    correct = jnp.argmax(logits0, axis=-1) == y
    target = None
    if targeted:
        ranked = jnp.argsort(logits0, axis=-1)  # ascending: the rank-r class is at column K - r
        target = jnp.take_along_axis(ranked, (logits0.shape[-1] - target_rank) * jnp.ones_like(y)[:, None],
                                     axis=1)[:, 0]

    def restart(r, carry):
        x_out, fooled = carry
        x_start = x if restarts <= 1 else jnp.where(
            r > 0, random_start(jax.random.fold_in(key, r), x, norm=norm, eps=eps, bounds=bounds), x)
        adv, best = _single_run(logits_fn, x, y, x_start, target, norm=norm, steps=steps,
                                alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds)
        # as the reference's perturb: re-predict the returned point, and count it only within eps
        new = (correct & ~fooled & (best < _NOT_FOUND) & (jnp.argmax(logits_fn(adv), -1) != y)
               & (_row_norm(adv - x, norm) <= eps))
        return jnp.where(new.reshape(bcast), adv, x_out), fooled | new

    x_adv, _ = jax.lax.fori_loop(0, restarts, restart, (x, jnp.zeros(x.shape[:1], bool)))
    return jax.lax.stop_gradient(x_adv)
