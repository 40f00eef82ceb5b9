"""FAB / FAB-T: hyperplane-box projections and whole attacks against AutoAttack's PyTorch FAB
(`pyautoattack.fab_pt.FABAttack_PT`) on the twin CNN, exact behaviour on affine models, and the
fixed-eps output contract (within eps and [0,1], misclassified or x unchanged)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from twin import digits_test_points, torch_twin, trained_twin

from robust_jax.attacks.fab_attack import fab, random_start
from robust_jax.attacks.fab_projections import project_l2, project_linf
from robust_jax.attacks.sort_keys import argsort_rows


def _norms(a, x, norm):
    d = np.asarray(a - x).reshape(len(x), -1)
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))


def _projection_problems(seed=0, rows=96, n=50):
    """Rows covering the three regimes: root before the first breakpoint (small residual), root between
    breakpoints, hyperplane out of the box (large residual); with zero weights and points on the box faces."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=(rows, n)).astype(np.float32)
    t[:8, :10], t[8:16, :10] = 0.0, 1.0
    w = rng.normal(size=(rows, n)).astype(np.float32)
    w[::3, ::4] = 0.0
    scale = np.abs(w).sum(1) * np.resize([1e-3, 0.05, 0.3, 3.0], rows) * rng.choice([-1, 1], rows)
    b = (np.sum(w * t, 1) + scale).astype(np.float32)
    return t, w, b


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_parity_with_reference(norm):
    torch = pytest.importorskip("torch")
    refs = pytest.importorskip("pyautoattack.fab_projections")
    t, w, b = _projection_problems()
    ref_fn, fn = (refs.projection_linf, project_linf) if norm == "linf" else (refs.projection_l2, project_l2)
    ref = ref_fn(torch.tensor(t), torch.tensor(w), torch.tensor(b)).numpy()
    d = np.asarray(jax.jit(fn)(t, w, b))
    np.testing.assert_allclose(d, ref, atol=1e-5, rtol=0)
    # the problems exercise every branch: on the hyperplane inside the box, and clipped-out rows
    z = t + d
    assert z.min() >= -1e-6 and z.max() <= 1 + 1e-6
    on_plane = np.abs(np.sum(w * z, 1) - b) < 1e-4 * np.abs(w).sum(1)
    assert 0 < on_plane.sum() < len(b)
    if norm == "linf":  # all free coordinates move by the same radius <=> root before any saturation
        first = [np.ptp(np.abs(d[i][w[i] != 0])) < 1e-6 for i in range(len(b))]
    else:  # no coordinate clipped <=> d is the unconstrained step along w
        c = np.sum(w * t, 1) - b
        first = np.all(np.abs(d + (c / (w ** 2).sum(1))[:, None] * w) < 1e-6, axis=1)
    assert 0 < np.sum(first) < on_plane.sum()


def test_int_key_argsort_is_the_stable_float_argsort():
    """The projections' sort (`sort_keys.argsort_rows`): the permutation of jnp.argsort, ties by index,
    -0.0 == 0.0, NaNs last, infinities in place."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 300)).astype(np.float32)
    v[:, :60] = 0.0
    v[:, 60:90] = 1.0
    v[0, :30:2] = -0.0
    v[1, 5], v[1, 9], v[2, 3], v[2, 4] = np.nan, -np.nan, np.inf, -np.inf
    v[3] = np.round(v[3])  # many ties
    v[4] = 1 + np.arange(300)[::-1] * np.finfo(np.float32).eps  # keys that differ in the low radix digit only
    v[5] = 2.0 ** rng.integers(-20, 20, 300)  # ... and in the high digit only (the exponent)
    np.testing.assert_array_equal(np.asarray(jax.jit(argsort_rows)(v)), np.asarray(jnp.argsort(v, axis=1)))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_minimal_in_the_box(norm):
    """Against the closed form where the box is inactive (t mid-box, tiny residual): Linf moves every
    coordinate by |c| / ||w||_1 against sign(w); L2 moves by -c w / ||w||^2."""
    rng = np.random.default_rng(1)
    t = rng.uniform(0.4, 0.6, size=(6, 30)).astype(np.float32)
    w = rng.normal(size=(6, 30)).astype(np.float32)
    c = 0.01 * rng.choice([-1, 1], 6).astype(np.float32)  # <w, t> - b
    b = np.sum(w * t, 1) - c
    d = np.asarray((project_linf if norm == "linf" else project_l2)(t, w, b))
    if norm == "linf":
        expected = -np.sign(w) * (c / np.abs(w).sum(1))[:, None]
    else:
        expected = -(c / (w ** 2).sum(1))[:, None] * w
    np.testing.assert_allclose(d, expected, atol=1e-6)


def _twin():
    apply_fn, params = trained_twin()
    return (lambda xb: apply_fn(params, xb)), params


@pytest.fixture
def torch_one_thread():
    """The reference's per-class backward passes are tiny; threads only contend on a small CPU."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.mark.parametrize("norm,eps", [("linf", 0.04), ("l2", 0.7)])
@pytest.mark.parametrize("targeted", [True, False])
def test_attack_parity_with_pyautoattack(norm, eps, targeted, torch_one_thread):
    """restarts=1 is deterministic in both (the first run starts at x), so at a fixed eps the same points
    are fooled, their points (the smallest adversarial perturbations found) have the same norms, and the
    others come back unchanged. FAB-T with n_target_classes=1 is the rank-2 target."""
    torch = torch_one_thread
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    logits_fn, params = _twin()
    x, y = digits_test_points(10)
    steps = 50
    ref_att = fab_pt.FABAttack_PT(torch_twin(params), norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1,
                                  n_iter=steps, eps=eps, targeted=targeted, n_target_classes=1, seed=0)
    ref = ref_att.perturb(torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.tensor(y).long())
    ref = ref.numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(jax.jit(lambda xb, yb: fab(logits_fn, xb, yb, None, norm=norm, eps=eps, steps=steps,
                                                 targeted=targeted, target_rank=2))(x, y))

    robust = lambda a: np.argmax(np.asarray(logits_fn(a)), 1) == y
    fooled_ref, fooled = ~robust(ref), ~robust(ours)
    np.testing.assert_array_equal(fooled, fooled_ref)
    assert 2 <= fooled.sum() <= robust(x).sum() - 2  # eps separates the points
    n_ref, n_ours = _norms(ref, x, norm), _norms(ours, x, norm)
    np.testing.assert_allclose(n_ours[fooled], n_ref[fooled], rtol=5e-3)
    assert n_ours[fooled].min() > 0 and n_ours.max() <= eps
    np.testing.assert_array_equal(ours[~fooled], x[~fooled])
    np.testing.assert_array_equal(ref[~fooled], x[~fooled])


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.6)])
def test_output_contract(norm, eps):
    logits_fn, _ = _twin()
    x, y = digits_test_points(12)
    y = y.copy()
    y[0] = (y[0] + 1) % 10  # misclassified from the start: must come back as x
    xa = np.asarray(jax.jit(lambda xb, yb: fab(logits_fn, xb, yb, jax.random.key(3), norm=norm, eps=eps, steps=8,
                                               restarts=2, targeted=norm == "linf"))(x, y))
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    assert _norms(xa, x, norm).max() <= eps * (1 + 1e-6)
    pred = np.argmax(np.asarray(logits_fn(xa)), 1)
    changed = np.any(xa != x, axis=(1, 2, 3))
    np.testing.assert_array_equal(pred[changed] != y[changed], True)
    assert not changed[0] and 3 <= changed.sum() <= 10


def _dead_zone_model(z):
    """Class 0 (logit 0.2) wins until pixels exceed 0.5; below, every gradient is zero."""
    h = jnp.sum(jax.nn.relu(z.reshape(z.shape[0], -1) - 0.5), 1)
    return jnp.stack([jnp.full_like(h, 0.2), h], 1)


def test_random_restarts():
    """At x = 0.45 the gradients vanish, so the run from x (restart 0) cannot move; restarts from
    x + noise of norm eps/2 reach the active region and fool every point. Later restarts keep the
    points of earlier ones (same key: restart r draws from fold_in(key, r)). (That restart 0 starts at
    x is what the parity tests check: the reference's first run does.)"""
    norm, eps = "linf", 0.2
    x, y = jnp.full((6, 4, 4, 3), 0.45), jnp.zeros(6, jnp.int32)
    attack = jax.jit(lambda xb, r: fab(_dead_zone_model, xb, y, jax.random.key(0), norm=norm, eps=eps, steps=3,
                                       restarts=r), static_argnums=1)
    two, four = (np.asarray(attack(x, r)) for r in (2, 4))
    fooled_two = np.argmax(np.asarray(_dead_zone_model(two)), 1) == 1
    np.testing.assert_array_equal(two[~fooled_two], x[~fooled_two])
    np.testing.assert_array_equal(four[fooled_two], two[fooled_two])
    assert fooled_two.sum() >= 3
    assert np.all(np.argmax(np.asarray(_dead_zone_model(four)), 1) == 1)
    assert np.all(_norms(four, x, norm) <= eps)


def test_target_rank_may_be_traced():
    logits_fn, _ = _twin()
    x, y = digits_test_points(6)
    run = lambda xb, r: fab(logits_fn, xb, y, None, norm="linf", eps=1.0, steps=5, targeted=True, target_rank=r)
    traced, static = jax.jit(run), jax.jit(run, static_argnums=1)
    np.testing.assert_allclose(np.asarray(traced(x, 2)), np.asarray(static(x, 2)), atol=1e-6)
    assert np.any(np.asarray(traced(x, 2)) != np.asarray(traced(x, 4)))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_at_half_eps(norm):
    x = jnp.full((4, 4, 4, 3), 0.5)
    x0 = random_start(jax.random.key(0), x, norm=norm, eps=0.2)
    np.testing.assert_allclose(_norms(x0, x, norm), 0.1, rtol=1e-5)


def _affine_problem(num_classes):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(k1, (4 * 4 * 3, num_classes))
    c = 0.1 * jax.random.normal(k2, (num_classes,))
    x = jax.random.uniform(k3, (8, 4, 4, 3), minval=0.4, maxval=0.6)  # far from the box faces
    logits_fn = lambda z: z.reshape(z.shape[0], -1) @ w + c
    f = logits_fn(x)
    return logits_fn, x, jnp.argmax(f, 1), w, f


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_exact_on_affine_model(norm, targeted):
    """On an affine model the linearisation is exact. The minimal distance to the boundary with class k
    is (f_y - f_k) / ||w_k - w_y||_dual; untargeted FAB goes for the nearest k, FAB-T for the rank-2 class.
    Step 1 (x1 = x, alpha = alpha_max) lands at eta times that distance; stepping back to beta*eta, step 2
    lands at 1 + (eta - 1)(u (1 - a) + a) with u = 1 - beta*eta, a = min(u / (1 + u), alpha_max)."""
    logits_fn, x, y, w, f = _affine_problem(5)
    wd = w.T[None] - w.T[y][:, None]  # [B, K, n]: w_k - w_y
    dual = jnp.abs(wd).sum(-1) if norm == "linf" else jnp.linalg.norm(wd, axis=-1)
    dist = (jnp.take_along_axis(f, y[:, None], 1) - f) / dual
    nearest = jnp.argmin(jnp.where(jax.nn.one_hot(y, f.shape[1]) > 0, jnp.inf, dist), 1)
    runner_up = jnp.argsort(f, 1)[:, -2]
    assert jnp.any(nearest != runner_up)  # the two variants attack different boundaries here
    exact = np.asarray(jnp.take_along_axis(dist, (runner_up if targeted else nearest)[:, None], 1)[:, 0])
    eta, beta, alpha_max = 1.05, 0.9, 0.1
    u = 1 - beta * eta
    a = min(u / (1 + u), alpha_max)
    attack = jax.jit(lambda xb, steps, eta: fab(logits_fn, xb, y, None, norm=norm, eps=10.0, steps=steps,
                                                targeted=targeted, eta=eta), static_argnums=1)
    # 20 steps: the best point stays step 2's (later iterates land at ~1.0087 x the distance)
    for steps, e, ratio in ((1, eta, eta), (1, 1.0 + 1e-4, 1.0 + 1e-4), (20, eta, 1 + (eta - 1) * (u * (1 - a) + a))):
        xa = attack(x, steps, e)
        np.testing.assert_allclose(_norms(xa, x, norm), ratio * exact, rtol=2e-5)
        assert np.all(np.argmax(np.asarray(logits_fn(xa)), 1) != np.asarray(y))


def test_rejects_bad_settings():
    logits_fn, x, y, _, _ = _affine_problem(3)
    with pytest.raises(ValueError, match="L1"):
        fab(logits_fn, x, y, None, norm="l1", eps=1.0)
    with pytest.raises(ValueError, match="key"):
        fab(logits_fn, x, y, None, norm="linf", eps=1.0, restarts=2)
    with pytest.raises(ValueError, match="target_rank"):
        fab(logits_fn, x, y, None, norm="linf", eps=1.0, targeted=True, target_rank=4)
