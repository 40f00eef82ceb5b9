"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search, Linf and L2.

The attack needs only logits. It starts from a structured point on the eps-sphere (Linf: vertical stripes
of +-eps, one sign per column and channel; L2: a 5x5 grid of "nested squares" blocks, one sign per block
and channel, scaled to norm eps) and then, once per query, changes one random square window of the
current best point, keeping the change only when the loss improves (or the example becomes
misclassified). The window side shrinks with the iteration count (`p_selection`). This is a port of the
algorithm as AutoAttack runs it (`pyautoattack.square.SquareAttack`: n_queries 5000, p_init 0.8, margin
loss, no schedule rescaling, one restart), including its details:
- the fraction p of pixels a window covers halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000,
  8000 (with `rescale_schedule` the iteration is first mapped onto a 10000-query run);
- side s = max(round(sqrt(p * h * w)), 1) (Linf) or max(., 3) made odd (L2), clamped to min(h, w);
  window corners are uniform in [0, h - s) (the last position h - s is never drawn, as in the reference);
- Linf: the window is set to +-eps around x, one sign per channel; L2: the window gets the nested-squares
  pattern (random transpose, one sign per channel) plus its old content, rescaled per channel so that the
  mass taken from a second, complementary window (which is zeroed) and the unused budget
  eps^2 - ||delta||^2 move into it; the whole perturbation is then rescaled to norm exactly eps;
- the loss is the reference's `margin_and_loss`: untargeted margin z_y - max_{j!=y} z_j (loss 'margin')
  or -CE (loss 'ce'); targeted max_{j!=t} z_j - z_t with CE towards t as the loss, whatever `loss` says;
- a proposal is accepted if the loss strictly decreases or the example becomes misclassified
  (margin <= 0); an example stops being attacked, and stops spending queries, once its margin is <= 0;
  queries count the initial point plus one per iteration in which the example was still being attacked.

In JAX every example runs through the loop with static shapes: one `lax.while_loop` over at most
`queries` iterations (it ends early when every example is fooled, as the reference breaks), whose body is
one forward pass of the whole batch plus cheap masked elementwise updates; fooled examples stay frozen.

Deliberate differences from the reference (documented, none changes the per-example distribution):
- Per-IMAGE randomness. The reference draws one window position, one channel-sign vector (Linf) and one
  transpose decision (L2) per iteration for the whole batch; we draw them independently per image, as the
  paper's original implementation does. Each example's marginal distribution is unchanged, so expected
  robust accuracy is the same, and an example's result no longer depends on which others share its batch.
- RNG: `jax.random` keys (folded with restart and iteration) instead of torch's global generator, so
  individual runs differ; `square_init`/`square_step` take explicit draws so tests can replay torch's.
- Signs are exactly +-1 (the reference's sign(2u - 1) is 0 with probability 2^-24).
- Success after a restart is read from the best margin (<= 0) instead of a second forward pass with argmax;
  they differ only on exact logit ties.
- Targeted mode: `y` are the true labels, the target is the class ranked `target_rank` by the clean logits
  (AutoAttack's convention for APGD-T/FAB-T), and only clean-correct examples are attacked; the reference
  `perturb` takes the targets directly (or random ones) and attacks every example not predicted as its
  target. Success (returned point) is reaching the target, as in the reference.
- L2 init on images whose 5x5 grid of (h // 5)-blocks overruns the image (e.g. h = 18): the reference
  fails with a shape error, we truncate the blocks. Images smaller than 5x5 are rejected (the reference
  divides by zero).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.attacks import losses as losses_lib
from robust_jax.attacks import primitives as prim
from robust_jax.checks import check_bounds, check_images, check_labels

NORMS = prim.NORMS
SQUARE_LOSSES = ("margin", "ce")
_TINY = prim.GUARD
# p_selection: (last iteration of the segment, divisor of p_init); beyond 8000 the divisor is 512.
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
               (8000, 256))


# ----------------------------------------------------------------------------------------- schedule
def p_selection(it: int, *, p_init: float = 0.8, queries: int = 5000, rescale: bool = False) -> float:
    """Fraction of the image a window covers at iteration `it` (0-based): p_init halved at each threshold.

    With `rescale`, `it` is first mapped to int(it / queries * 10000), so that a shorter run goes through
    the whole schedule of a 10000-query run (the reference's `resc_schedule`)."""
    if rescale:
        it = int(it / queries * 10000)
    for last, divisor in _P_SCHEDULE:
        if it <= last:
            # iterations 0..10 keep p_init; (10, 50] -> /2; ... (the reference's strict lower bounds)
            return p_init / divisor if divisor > 1 else p_init
    return p_init / 512


def square_side(p: float, *, h: int, w: int, norm: str) -> int:
    """Window side for fraction p of an h x w image: round(sqrt(p * h * w)) (the reference's
    sqrt(p * n_features / c)), at least 1 (Linf) or at least 3 and odd (L2), at most min(h, w)."""
    s = int(round(math.sqrt(p * h * w)))
    if norm == "linf":
        s = max(s, 1)
    else:
        s = max(s, 3)
        s += 1 - s % 2
    return min(s, min(h, w))


def nested_squares(rows: int, cols: int) -> np.ndarray:
    """Unit-L2 rows x cols pattern: pixel value sum_{k >= d}^{K-1} 1/(k+1)^2, d its Chebyshev distance to
    the centre (rows // 2, cols // 2), K = max(rows, cols) // 2 + 1 (squares of growing radius added with
    weight 1/(radius+1)^2). Accumulated in float32 term by term, as the reference does."""
    out = np.zeros((rows, cols), np.float32)
    if rows == 0 or cols == 0:
        return out
    r = np.abs(np.arange(rows) - rows // 2)[:, None]
    c = np.abs(np.arange(cols) - cols // 2)[None, :]
    dist = np.maximum(r, c)
    for k in range(max(rows // 2, cols // 2) + 1):
        out = out + np.where(dist <= k, np.float32(1.0) / np.float32((k + 1) ** 2), np.float32(0.0))
    return (out / np.sqrt(np.sum(np.square(out)))).astype(np.float32)


def l2_window_pattern(s: int) -> np.ndarray:
    """The L2 window pattern (untransposed): nested squares on the top s // 2 rows, minus nested squares
    on the other rows, normalised to unit L2 norm."""
    top = nested_squares(s // 2, s)
    bottom = nested_squares(s - s // 2, s)
    pat = np.concatenate([top, -bottom], axis=0)
    return (pat / np.sqrt(np.sum(np.square(pat)))).astype(np.float32)


class Schedule(NamedTuple):
    """Static (numpy) piecewise-constant window side: iteration i is in segment sum(i >= starts[1:])."""

    starts: np.ndarray  # int32 [n_seg], first iteration of each segment (starts[0] == 0)
    sides: np.ndarray  # int32 [n_seg]
    patterns: np.ndarray | None  # L2: float32 [n_seg, smax, smax], zero padded; None for Linf

    def at(self, i):
        """(segment, side) at traced iteration i."""
        seg = jnp.sum(i >= jnp.asarray(self.starts[1:], jnp.int32)).astype(jnp.int32)
        return seg, jnp.asarray(self.sides)[seg]


@functools.lru_cache(maxsize=64)
def make_schedule(queries: int, h: int, w: int, *, norm: str, p_init: float, rescale: bool) -> Schedule:
    sides = [square_side(p_selection(i, p_init=p_init, queries=queries, rescale=rescale), h=h, w=w, norm=norm)
             for i in range(max(queries, 1))]
    starts = [0] + [i for i in range(1, len(sides)) if sides[i] != sides[i - 1]]
    seg_sides = [sides[i] for i in starts]
    patterns = None
    if norm == "l2":
        smax = max(seg_sides)
        patterns = np.zeros((len(seg_sides), smax, smax), np.float32)
        for j, s in enumerate(seg_sides):
            patterns[j, :s, :s] = l2_window_pattern(s)
    return Schedule(np.asarray(starts, np.int32), np.asarray(seg_sides, np.int32), patterns)


# ------------------------------------------------------------------------------------------ losses
def margin_and_loss(logits, y, *, loss: str = "margin", targeted: bool = False):
    """The reference's (margin, loss), both minimised; margin <= 0 means success.
    Untargeted: margin = z_y - max_{j!=y} z_j, loss = margin ('margin') or -CE ('ce').
    Targeted (y = targets): margin = max_{j!=y} z_j - z_y, loss = CE towards y (always, as the reference)."""
    gap = losses_lib.margin(logits, y)  # max_{j!=y} z_j - z_y
    if targeted:
        return gap, losses_lib.cross_entropy(logits, y)
    if loss == "ce":
        return -gap, -losses_lib.cross_entropy(logits, y)
    return -gap, -gap


# ------------------------------------------------------------------------------------ init / step
class SquareState(NamedTuple):
    """Per-example search state: best point, its margin and loss, queries spent (float32 [B] counters)."""

    x_best: jax.Array
    margin: jax.Array
    loss: jax.Array
    queries: jax.Array


class Draws(NamedTuple):
    """The random numbers of one init or one iteration, per image. Linf init: signs [B,1,W,C]. L2 init:
    signs [B,n_blocks,C], transposed [B,n_blocks]. Linf step: vh, vw [B], signs [B,1,1,C]. L2 step: also
    vh2, vw2 [B] (the complementary window) and transposed [B]. Signs are +-1."""

    signs: jax.Array
    vh: jax.Array | None = None
    vw: jax.Array | None = None
    vh2: jax.Array | None = None
    vw2: jax.Array | None = None
    transposed: jax.Array | None = None


def _channel_norm(v):
    """L2 norm of each (example, channel) over the image plane, [B,1,1,C]: the L2 window's budget is
    spent per channel."""
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))


def _to_eps_sphere(x, delta, eps, bounds):
    """x + eps * delta / ||delta||_2 (per example), clipped into the box (the reference's `normalize`)."""
    return prim.to_sphere(x, delta, norm="l2", radius=eps, bounds=bounds)


def _l2_init_layout(h: int, w: int):
    """Static layout of the L2 init grid: block index per pixel (-1 outside), offsets inside the block,
    block side s0 = h // 5, first corner (h - 5 s0) // 2 on both axes (the reference uses h for both)."""
    s0 = h // 5
    start = (h - 5 * s0) // 2
    rows, cols = np.arange(h), np.arange(w)
    kr = np.where(rows >= start, (rows - start) // s0, -1)
    kc = np.where(cols >= start, (cols - start) // s0, -1)
    nr, nc = h // s0, w // s0
    inside = (kr[:, None] >= 0) & (kr[:, None] < nr) & (kc[None, :] >= 0) & (kc[None, :] < nc)
    block = np.where(inside, kr[:, None] * nc + kc[None, :], -1)
    off_r = np.broadcast_to(((rows - start) % s0)[:, None], (h, w))
    off_c = np.broadcast_to(((cols - start) % s0)[None, :], (h, w))
    return s0, nr * nc, block, off_r, off_c


def l2_init_blocks(h: int, w: int) -> int:
    """Number of init blocks (sign vectors / transposes drawn per image) for an h x w image."""
    return _l2_init_layout(h, w)[1]


def init_point(x, draws: Draws, *, norm: str, eps, bounds=prim.UNIT_BOX):
    """Start point. Linf: x + eps * stripes, one sign per (column, channel), clipped into the box. L2: a grid
    of nested-squares blocks (block side h // 5), one sign per (block, channel) and a random transpose per
    block, scaled to L2 norm eps, then clipped into the box."""
    if norm == "linf":
        return prim.clip_to_box(x + eps * draws.signs, bounds)
    _, h, w, _ = x.shape
    s0, _, block, off_r, off_c = _l2_init_layout(h, w)
    pat = l2_window_pattern(s0)
    plain = np.where(block >= 0, pat[off_r, off_c], 0.0).astype(np.float32)
    trans = np.where(block >= 0, pat[off_c, off_r], 0.0).astype(np.float32)
    idx = jnp.asarray(np.maximum(block, 0))
    t = jnp.take(draws.transposed, idx, axis=1)  # [B,H,W]
    sgn = jnp.take(draws.signs, idx, axis=1)  # [B,H,W,C]
    delta = jnp.where(t, trans, plain)[..., None] * sgn
    return _to_eps_sphere(x, delta.astype(x.dtype), eps, bounds)


def _window(h, w, vh, vw, s):
    """bool [B,H,W,1]: rows [vh, vh+s) x cols [vw, vw+s) per image."""
    r = jnp.arange(h)[None, :, None]
    c = jnp.arange(w)[None, None, :]
    vh, vw = vh[:, None, None], vw[:, None, None]
    return ((r >= vh) & (r < vh + s) & (c >= vw) & (c < vw + s))[..., None]


def propose(x, x_best, draws: Draws, seg, s, *, norm: str, eps, schedule: Schedule, bounds=prim.UNIT_BOX):
    """One candidate per example from the current best point (see the module docstring), in the box."""
    _, h, w, c = x.shape
    m1 = _window(h, w, draws.vh, draws.vw, s)
    if norm == "linf":
        cand = x_best + jnp.where(m1, 2.0 * eps * draws.signs, 0.0)
        return prim.project(cand, x, norm="linf", eps=eps, bounds=bounds, linf_rule="clamp")
    m2 = _window(h, w, draws.vh2, draws.vw2, s)
    delta = x_best - x
    norm_w1 = _channel_norm(jnp.where(m1, delta, 0.0))  # [B,1,1,C]
    norm_img = prim.per_example_norm(delta, "l2")  # [B,1,1,1]
    norm_both = _channel_norm(jnp.where(m1 | m2, delta, 0.0))  # [B,1,1,C]
    # the pattern placed at window 1: patterns[seg][r - vh, c - vw] (or transposed), zero padded
    smax = schedule.patterns.shape[-1]
    dr = jnp.clip(jnp.arange(h)[None, :, None] - draws.vh[:, None, None], 0, smax - 1)
    dc = jnp.clip(jnp.arange(w)[None, None, :] - draws.vw[:, None, None], 0, smax - 1)
    flat = jnp.where(draws.transposed[:, None, None], dc * smax + dr, dr * smax + dc)
    pattern = jnp.take(jnp.asarray(schedule.patterns).reshape(schedule.patterns.shape[0], -1)[seg], flat)
    fresh = jnp.where(m1, pattern[..., None] * draws.signs + delta / (norm_w1 + _TINY), 0.0)
    budget = jnp.sqrt(jnp.maximum(eps ** 2 - jnp.square(norm_img), 0.0) / c + jnp.square(norm_both))
    fresh = fresh / (_channel_norm(fresh) + _TINY) * budget
    delta = jnp.where(m1, fresh, jnp.where(m2, 0.0, delta))
    return _to_eps_sphere(x, delta, eps, bounds)


def square_init(logits_fn: Callable, x, y, draws: Draws, *, norm: str, eps, loss: str = "margin",
                targeted: bool = False, bounds=prim.UNIT_BOX) -> SquareState:
    """The start point, its margin and loss, and one query spent per example."""
    x0 = init_point(x, draws, norm=norm, eps=eps, bounds=bounds)
    margin, lval = margin_and_loss(logits_fn(x0), y, loss=loss, targeted=targeted)
    return SquareState(x0, margin, lval, jnp.ones(x.shape[0], jnp.float32))


def square_step(logits_fn: Callable, x, y, state: SquareState, i, draws: Draws, *, norm: str, eps,
                schedule: Schedule, loss: str = "margin", targeted: bool = False,
                bounds=prim.UNIT_BOX) -> SquareState:
    """Iteration i: examples with margin > 0 try one candidate; it replaces the best point if the loss
    strictly decreased or the margin is <= 0; they spend one query. Others do not change."""
    active = state.margin > 0
    seg, s = schedule.at(i)
    cand = propose(x, state.x_best, draws, seg, s, norm=norm, eps=eps, schedule=schedule, bounds=bounds)
    margin, lval = margin_and_loss(logits_fn(cand), y, loss=loss, targeted=targeted)
    improved = lval < state.loss
    accept = active & (improved | (margin <= 0))
    return SquareState(
        x_best=jnp.where(accept[:, None, None, None], cand, state.x_best),
        margin=jnp.where(accept, margin, state.margin),
        loss=jnp.where(active & improved, lval, state.loss),
        queries=state.queries + active.astype(jnp.float32))


# ------------------------------------------------------------------------------------------ draws
# All random numbers of an init or an iteration come from one `jax.random.bits` call (a threefry call
# per draw kind would compile several times slower). Uniforms take 24 bits, as torch.rand's float32 do.
def _uniform(words):
    return (words >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)


def _sign(words, dtype):
    return jnp.where(words >> 31 == 1, 1.0, -1.0).astype(dtype)


def _below(words, n):
    """floor(u * n) for u uniform in [0, 1): the reference's random_int(0, n), uniform on 0..n-1."""
    return jnp.minimum(jnp.floor(_uniform(words) * n).astype(jnp.int32), n - 1)


def sample_init_draws(key, x, *, norm: str) -> Draws:
    b, h, w, c = x.shape
    if norm == "linf":
        return Draws(signs=_sign(jax.random.bits(key, (b, 1, w, c), jnp.uint32), x.dtype))
    n = l2_init_blocks(h, w)
    words = jax.random.bits(key, (b, n, c + 1), jnp.uint32)
    return Draws(signs=_sign(words[..., :c], x.dtype), transposed=_uniform(words[..., c]) > 0.5)


def sample_step_draws(key, x, s, *, norm: str) -> Draws:
    """Window corners uniform on 0..max(h - s, 1) - 1 per image (the reference's random_int(0, h - s))."""
    b, h, w, c = x.shape
    words = jax.random.bits(key, (b, c + 5), jnp.uint32)
    hi_h, hi_w = jnp.maximum(h - s, 1), jnp.maximum(w - s, 1)
    draws = Draws(signs=_sign(words[:, :c], x.dtype).reshape(b, 1, 1, c), vh=_below(words[:, c], hi_h),
                  vw=_below(words[:, c + 1], hi_w))
    if norm == "linf":
        return draws
    return draws._replace(vh2=_below(words[:, c + 2], hi_h), vw2=_below(words[:, c + 3], hi_w),
                          transposed=_uniform(words[:, c + 4]) > 0.5)


# ------------------------------------------------------------------------------------------- runs
def _check(x, y, norm, eps, queries, p_init, restarts, loss, target_rank, bounds):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if loss not in SQUARE_LOSSES:
        raise ValueError(f"loss must be one of {SQUARE_LOSSES}, got {loss!r}")
    for name, v in (("queries", queries), ("restarts", restarts)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v}")
    if not isinstance(eps, jax.core.Tracer) and eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    check_images(x, "x", bounds)
    check_labels(y, x.shape[0], "y")
    if norm == "l2" and min(x.shape[1:3]) < 5:
        raise ValueError(f"L2 square attack needs images of at least 5x5 (its init grid), got {x.shape}")
    if target_rank < 2:
        raise ValueError(f"target_rank must be >= 2 (rank 1 is the predicted class), got {target_rank}")


def square_run(logits_fn: Callable, x, y, key, *, norm: str, eps, queries: int = 5000, p_init: float = 0.8,
               loss: str = "margin", targeted: bool = False, rescale_schedule: bool = False,
               attack=None, bounds=prim.UNIT_BOX) -> SquareState:
    """One run of the search (the reference's `attack_single_run`) on every example where `attack`
    (bool [B], default all) is set; `y` are true labels, or targets when `targeted`. The final state's
    margin <= 0 marks success; examples outside `attack` keep margin -inf and spend no query.
    With rescale_schedule=False, a run with fewer queries is a prefix of a longer run with the same key.
    bounds=(lo, hi): the box of valid inputs every candidate is clipped into."""
    _, h, w, _ = x.shape
    schedule = make_schedule(int(queries), h, w, norm=norm, p_init=float(p_init), rescale=bool(rescale_schedule))
    k_init, k_loop = jax.random.split(key)
    kw = dict(norm=norm, eps=eps, loss=loss, targeted=targeted, bounds=check_bounds(bounds))
    state = square_init(logits_fn, x, y, sample_init_draws(k_init, x, norm=norm), **kw)
    if attack is not None:
        state = state._replace(margin=jnp.where(attack, state.margin, -jnp.inf),
                               queries=jnp.where(attack, state.queries, 0.0))

    def cond(carry):
        i, st = carry
        return (i < queries) & jnp.any(st.margin > 0)

    def body(carry):
        i, st = carry
        _, s = schedule.at(i)
        draws = sample_step_draws(jax.random.fold_in(k_loop, i), x, s, norm=norm)
        return i + 1, square_step(logits_fn, x, y, st, i, draws, schedule=schedule, **kw)

    _, state = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state))
    return jax.tree_util.tree_map(jax.lax.stop_gradient, state)


class SquareResult(NamedTuple):
    x_adv: jax.Array  # adversarial point where fooled, x elsewhere
    fooled: jax.Array  # bool [B]: misclassified (untargeted) / predicted as the target (targeted)
    queries: jax.Array  # float32 [B]: queries spent over all restarts (0 for examples never attacked)
    target: jax.Array | None  # int [B] targets when targeted, else None


def square_with_info(logits_fn: Callable, x, y, key, *, norm: str, eps, queries: int = 5000,
                     p_init: float = 0.8, restarts: int = 1, loss: str = "margin", targeted: bool = False,
                     target_rank: int = 2, rescale_schedule: bool = False, bounds=prim.UNIT_BOX) -> SquareResult:
    """`square` with its bookkeeping: which examples were fooled and how many queries each spent."""
    bounds = check_bounds(bounds)
    _check(x, y, norm, eps, queries, p_init, restarts, loss, target_rank, bounds)
    clean = logits_fn(x)
    check_labels(y, x.shape[0], "y", num_classes=clean.shape[-1])
    pred = jnp.argmax(clean, axis=-1)
    attack = pred == y
    target = None
    if targeted:
        if target_rank > clean.shape[-1]:
            raise ValueError(f"target_rank {target_rank} exceeds the number of classes {clean.shape[-1]}")
        target = jnp.argsort(clean, axis=-1)[:, -target_rank]
        attack = attack & (pred != target)
    labels = target if targeted else y

    def one_restart(r, carry):
        x_adv, robust, spent = carry
        st = square_run(logits_fn, x, labels, jax.random.fold_in(key, r), norm=norm, eps=eps, queries=queries,
                        p_init=p_init, loss=loss, targeted=targeted, rescale_schedule=rescale_schedule,
                        attack=robust, bounds=bounds)
        won = robust & (st.margin <= 0)
        return jnp.where(won[:, None, None, None], st.x_best, x_adv), robust & ~won, spent + st.queries

    x_adv, robust, spent = jax.lax.fori_loop(0, int(restarts), one_restart,
                                             (x, attack, jnp.zeros(x.shape[0], jnp.float32)))
    return SquareResult(jax.lax.stop_gradient(x_adv), attack & ~robust, spent, target)


def square(logits_fn: Callable, x, y, key, *, norm: str, eps, queries: int = 5000, p_init: float = 0.8,
           restarts: int = 1, loss: str = "margin", targeted: bool = False, target_rank: int = 2,
           rescale_schedule: bool = False, bounds=prim.UNIT_BOX):
    """Square Attack; returns x_adv [B,H,W,C]: the adversarial point for fooled examples (inside the eps
    ball and the box `bounds`, default [0,1], which x must lie in), x unchanged for the others and for
    clean-misclassified ones (the reference's
    `perturb`). Defaults are AutoAttack's. `y`: true labels. targeted=True: each example is pushed
    towards its class ranked `target_rank` by the clean logits. Each restart re-attacks the examples not
    yet fooled from a fresh start point. Pure and jit-able (close over the static settings)."""
    return square_with_info(logits_fn, x, y, key, norm=norm, eps=eps, queries=queries, p_init=p_init,
                            restarts=restarts, loss=loss, targeted=targeted, target_rank=target_rank,
                            rescale_schedule=rescale_schedule, bounds=bounds).x_adv
