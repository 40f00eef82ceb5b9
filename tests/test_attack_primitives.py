"""The attacks' shared geometry (`attacks.primitives`): norms, projection onto the eps-ball and a box, random
starts, the reference arithmetic each attack keeps, and the `bounds` every attack takes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import AutoAttack, pgd
from robust_jax.attacks import auto_pgd as apgd_mod, discrete, fab_attack as fab_mod, square_attack as square_mod
from robust_jax.attacks import primitives as prim
from robust_jax.attacks import sanity_checks
from robust_jax.attacks.fab_projections import project_l2 as hyperplane_l2, project_linf as hyperplane_linf
from robust_jax.checks import check_images


def _norms(v, norm):
    v = np.asarray(v, np.float64).reshape(len(v), -1)
    return np.abs(v).max(1) if norm == "linf" else np.sqrt(np.square(v).sum(1))


def _l2(v):
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def test_per_example_norm_values_and_shapes():
    v = jax.random.normal(jax.random.key(0), (5, 3, 4, 2))
    for norm in ("linf", "l2"):
        kept = prim.per_example_norm(v, norm)
        flat = prim.per_example_norm(v, norm, keepdims=False)
        assert kept.shape == (5, 1, 1, 1) and flat.shape == (5,)
        np.testing.assert_allclose(kept.ravel(), _norms(v, norm), rtol=1e-6)
        np.testing.assert_allclose(flat, _norms(v, norm), rtol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        prim.per_example_norm(v, "l1")


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (-0.5, 0.25)])
@pytest.mark.parametrize("norm,rules", [("linf", ("delta", "clamp")), ("l2", ("factor", "radius", "outside"))])
def test_projection_lands_in_the_ball_and_the_box(norm, rules, bounds):
    lo, hi = bounds
    eps = 0.3
    x = jax.random.uniform(jax.random.key(1), (16, 4, 4, 3), minval=lo, maxval=hi)
    x = x.at[0].set(lo).at[1].set(hi)  # on the faces, where the box binds
    scale = jnp.geomspace(0.01, 5.0, 16).reshape(16, 1, 1, 1)  # from deep inside the ball to far outside
    z = x + scale * jax.random.normal(jax.random.key(2), x.shape)
    for rule in rules:
        kw = dict(linf_rule=rule) if norm == "linf" else dict(l2_rule=rule, guard=1e-7 if rule == "outside" else 1e-12)
        p = np.asarray(prim.project(z, x, norm=norm, eps=eps, bounds=bounds, **kw))
        assert p.min() >= lo and p.max() <= hi, rule
        assert _norms(p - x, norm).max() <= eps * (1 + 1e-6), rule
        if norm == "linf":  # the nearest point of ball and box: coordinate-wise clip to their intersection
            nearest = np.clip(z, np.maximum(x - eps, lo), np.minimum(x + eps, hi))
            np.testing.assert_allclose(p, nearest, atol=1e-6)
        inside = _norms(z - x, norm) < 0.9 * eps
        assert inside.sum() >= 2
        np.testing.assert_allclose(p[inside], np.clip(z, lo, hi)[inside], atol=1e-6)  # in the ball: box only
        outside = _norms(z - x, norm) > 1.5 * eps
        if norm == "l2":  # without the box the point lands on the sphere
            free = np.asarray(prim.project_l2_ball(z, x, eps, rule=rule))
            np.testing.assert_allclose(_norms(free - x, norm)[outside], eps, rtol=1e-5)


def test_projection_rejects_unknown_rules():
    x = jnp.zeros((1, 2, 2, 1))
    with pytest.raises(ValueError, match="linf_rule"):
        prim.project(x, x, norm="linf", eps=0.1, linf_rule="nearest")
    with pytest.raises(ValueError, match="l2_rule"):
        prim.project(x, x, norm="l2", eps=0.1, l2_rule="nearest")
    with pytest.raises(ValueError, match="norm"):
        prim.project(x, x, norm="l1", eps=0.1)


def test_uniform_start_fills_the_ball():
    """2-d examples centred in a wide box: L2 radii r have P(r < eps / sqrt(2)) = 1/2 for a uniform point in
    the disc (a uniform radius would give 0.71); Linf coordinates are uniform in [-eps, eps]."""
    eps = 0.4
    x = jnp.zeros((4000, 1, 1, 2))
    pts = np.asarray(prim.uniform_start(jax.random.key(3), x, norm="l2", eps=eps, bounds=(-1.0, 1.0)))
    r = _norms(pts, "l2")
    assert r.max() <= eps * (1 + 1e-6)
    assert abs(np.mean(r < eps / np.sqrt(2)) - 0.5) < 0.04
    angle = np.arctan2(pts[:, 0, 0, 1], pts[:, 0, 0, 0])
    assert abs(np.mean(angle > 0) - 0.5) < 0.04
    cube = np.asarray(prim.uniform_start(jax.random.key(4), x, norm="linf", eps=eps, bounds=(-1.0, 1.0)))
    assert np.abs(cube).max() <= eps and abs(np.mean(cube > eps / 2) - 0.25) < 0.03
    clipped = np.asarray(prim.uniform_start(jax.random.key(4), x + 0.9, norm="linf", eps=eps, bounds=(-1.0, 1.0)))
    assert clipped.max() == 1.0  # clipped into the box


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("scale_first", [False, True])
def test_direction_start_lies_on_the_sphere(norm, scale_first):
    x = jnp.zeros((8, 4, 4, 3))
    start = prim.direction_start(jax.random.key(5), x, norm=norm, radius=0.3, bounds=(-1.0, 1.0),
                                 scale_first=scale_first)
    np.testing.assert_allclose(_norms(start, norm), 0.3, rtol=1e-5)
    assert len(np.unique(np.asarray(start).reshape(8, -1), axis=0)) == 8  # one direction per example
    clipped = prim.direction_start(jax.random.key(5), x, norm=norm, radius=0.3, bounds=(0.0, 1.0))
    assert float(jnp.min(clipped)) == 0.0  # the default box clips the negative half away


def test_gaussian_start_is_not_clipped():
    x = jnp.zeros((4, 4, 4, 3))
    start = prim.gaussian_start(jax.random.key(6), x, std=0.1)
    assert float(jnp.min(start)) < 0.0
    np.testing.assert_allclose(np.std(np.asarray(start)), 0.1, rtol=0.15)


def test_ascent_step_lengths():
    g = jax.random.normal(jax.random.key(7), (6, 3, 3, 2))
    np.testing.assert_array_equal(prim.ascent_step(g, norm="linf", step_size=0.1), 0.1 * jnp.sign(g))
    for scale_first in (False, True):
        step = prim.ascent_step(g, norm="l2", step_size=0.25, scale_first=scale_first)
        np.testing.assert_allclose(_norms(step, "l2"), 0.25, rtol=1e-6)
    per_example = jnp.linspace(0.1, 0.6, 6).reshape(6, 1, 1, 1)
    np.testing.assert_allclose(_norms(prim.ascent_step(g, norm="l2", step_size=per_example), "l2"),
                               per_example.ravel(), rtol=1e-6)
    np.testing.assert_array_equal(prim.ascent_step(jnp.zeros_like(g), norm="l2", step_size=0.1), 0.0)


# --- each attack's arithmetic against its reference formula, written out ------------------------------------
def test_discrete_start_step_and_projection_are_the_reference_formulas():
    center = jax.random.uniform(jax.random.key(8), (6, 5, 5, 3))
    key = jax.random.key(9)
    eps = 0.1
    k_coin, k_noise = jax.random.split(key)
    noise = jax.random.normal(k_noise, center.shape, center.dtype)
    start = jnp.clip(center + eps * noise / (_l2(noise) + 1e-10), 0.0, 1.0)
    np.testing.assert_array_equal(discrete.sphere_start(key, center, eps=eps, start_prob=1.0), start)

    g = jax.random.normal(jax.random.key(10), center.shape)
    np.testing.assert_array_equal(discrete.ascent(center, g, step_size=0.1), center + 0.1 * g / (_l2(g) + 1e-10))

    x = center + jnp.linspace(0.0, 0.3, 6).reshape(6, 1, 1, 1) * noise / _l2(noise)
    delta = x - center
    n = _l2(delta)
    expected = jnp.clip(center + jnp.where(n > eps, delta * eps / (n + 1e-7), delta), 0.0, 1.0)
    np.testing.assert_array_equal(discrete.project_l2(x, center, eps=eps), expected)


def test_apgd_projection_and_start_are_the_reference_formulas():
    x = jax.random.uniform(jax.random.key(11), (6, 5, 5, 3))
    z = x + jnp.linspace(0.0, 0.5, 6).reshape(6, 1, 1, 1) * jax.random.normal(jax.random.key(12), x.shape)
    eps = 0.2
    linf = jnp.clip(jnp.minimum(jnp.maximum(z, x - eps), x + eps), 0.0, 1.0)
    np.testing.assert_array_equal(apgd_mod._project(z, x, eps, "linf", (0.0, 1.0)), linf)
    d = z - x
    n = _l2(d)
    l2 = jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n), 0.0, 1.0)
    np.testing.assert_array_equal(apgd_mod._project(z, x, eps, "l2", (0.0, 1.0)), l2)

    key = jax.random.key(13)
    t = 2.0 * jax.random.uniform(key, x.shape, jnp.float32) - 1.0
    t_max = jnp.max(jnp.abs(t), axis=(1, 2, 3), keepdims=True)
    np.testing.assert_array_equal(apgd_mod.random_start(key, x, norm="linf", eps=eps),
                                  jnp.clip(x + eps * (t / (t_max + 1e-12)), 0.0, 1.0))
    t = jax.random.normal(key, x.shape, jnp.float32)
    np.testing.assert_array_equal(apgd_mod.random_start(key, x, norm="l2", eps=eps),
                                  jnp.clip(x + eps * (t / (_l2(t) + 1e-12)), 0.0, 1.0))


def test_pgd_projection_is_the_plain_formula():
    x = jax.random.uniform(jax.random.key(14), (6, 5, 5, 3))
    z = x + jnp.linspace(0.0, 0.5, 6).reshape(6, 1, 1, 1) * jax.random.normal(jax.random.key(15), x.shape)
    eps = 0.2
    np.testing.assert_array_equal(prim.project(z, x, norm="linf", eps=eps),
                                  jnp.clip(x + jnp.clip(z - x, -eps, eps), 0.0, 1.0))
    d = z - x
    np.testing.assert_array_equal(prim.project(z, x, norm="l2", eps=eps),
                                  jnp.clip(x + d * jnp.minimum(1.0, eps / (_l2(d) + 1e-12)), 0.0, 1.0))


# --- bounds through the attacks -----------------------------------------------------------------------------
def _linear(w):
    return lambda v: v.reshape(v.shape[0], -1) @ w


def test_pgd_keeps_custom_bounds_and_does_not_clip_at_zero():
    """Two classes, linear model: PGD's answer is x + eps * sign(w_other - w_y), clipped into the box."""
    w = jax.random.normal(jax.random.key(16), (4 * 4 * 3, 2))
    x = jnp.full((6, 4, 4, 3), 0.02).at[0].set(-1.0).at[1].set(1.0)  # near 0, and on both faces of [-1, 1]
    y = jnp.array([0, 1, 0, 1, 1, 0])
    eps = 0.1
    direction = jnp.sign(w[:, 1 - y] - w[:, y]).T.reshape(x.shape)
    kw = dict(norm="linf", eps=eps, step_size=eps / 4, steps=6, random_start=False)
    wide = pgd(_linear(w), x, y, None, bounds=(-1.0, 1.0), **kw)
    np.testing.assert_allclose(wide, jnp.clip(x + eps * direction, -1.0, 1.0), atol=1e-6)
    assert float(wide.min()) == -1.0 and float(wide.max()) == 1.0
    assert float(jnp.min(wide[2:])) < -0.07  # below 0, where the [0,1] box would have stopped it
    unit = pgd(_linear(w), x[2:], y[2:], None, **kw)
    np.testing.assert_allclose(unit, jnp.clip(x[2:] + eps * direction[2:], 0.0, 1.0), atol=1e-6)
    assert np.any(np.asarray(unit) != np.asarray(wide[2:]))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        pgd(_linear(w), x, y, None, **kw)  # the default box rejects images outside it
    start = pgd(_linear(w), x, y, jax.random.key(0), bounds=(-1.0, 1.0), norm="l2", eps=0.5, step_size=0.1,
                steps=3)
    assert float(start.min()) >= -1.0 and float(start.max()) <= 1.0
    assert np.all(_norms(start - x, "l2") <= 0.5 * (1 + 1e-6))


@functools.lru_cache(maxsize=None)
def _box_problem():
    w = jax.random.normal(jax.random.key(17), (6 * 6 * 3, 4))
    x = jax.random.uniform(jax.random.key(18), (8, 6, 6, 3), minval=-1.0, maxval=1.0)
    x = x.at[0].set(-1.0).at[1].set(1.0)
    f = _linear(w)
    return f, x, jnp.argmax(f(x), -1)


@pytest.mark.parametrize("attack,norm,eps", [("apgd", "linf", 0.2), ("fab", "linf", 0.2), ("fab", "l2", 1.0),
                                             ("square", "l2", 1.0)])
def test_attacks_stay_in_custom_bounds(attack, norm, eps):
    f, x, y = _box_problem()
    key = jax.random.key(19)
    run = {"apgd": lambda: apgd_mod.apgd(f, x, y, key, norm=norm, eps=eps, steps=5, bounds=(-1.0, 1.0)),
           "fab": lambda: fab_mod.fab(f, x, y, key, norm=norm, eps=eps, steps=5, restarts=2, bounds=(-1.0, 1.0)),
           "square": lambda: square_mod.square(f, x, y, key, norm=norm, eps=eps, queries=10, bounds=(-1.0, 1.0))}
    xa = np.asarray(run[attack]())
    assert xa.min() >= -1.0 and xa.max() <= 1.0
    assert _norms(xa - x, norm).max() <= eps * (1 + 1e-5)
    fooled = np.asarray(jnp.argmax(f(xa), -1) != y)
    assert fooled.any()
    assert np.any((xa < np.asarray(x)) & (np.asarray(x) < 0))  # moved further below 0: not clipped to [0,1]
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        {"apgd": apgd_mod.apgd, "fab": fab_mod.fab, "square": square_mod.square}[attack](f, x, y, key, norm=norm,
                                                                                         eps=eps)


@pytest.mark.parametrize("solver", [hyperplane_linf, hyperplane_l2])
def test_hyperplane_projection_in_other_boxes(solver):
    """Where the box does not bind, the minimal step onto <w, t + d> = b is the unconstrained one whatever the
    box; where it binds, t + d stays in the box."""
    rows = 6
    t = jax.random.uniform(jax.random.key(20), (rows, 10), minval=-0.1, maxval=0.1)
    w = jax.random.normal(jax.random.key(21), (rows, 10))
    b = jnp.sum(w * t, axis=1) + 0.01  # a small residual: the step stays far from the faces
    free = (jnp.sign(w) * 0.01 / jnp.sum(jnp.abs(w), 1, keepdims=True) if solver is hyperplane_linf
            else w * 0.01 / jnp.sum(w * w, 1, keepdims=True))
    for bounds in ((-1.0, 1.0), (-0.5, 2.0)):
        np.testing.assert_allclose(solver(t, w, b, bounds=bounds), free, atol=1e-6)
        far = solver(t, w, b + 30.0, bounds=bounds)  # beyond reach: the closest point of the box
        assert float(jnp.min(t + far)) >= bounds[0] - 1e-6 and float(jnp.max(t + far)) <= bounds[1] + 1e-6
        assert float(jnp.max(jnp.abs(far))) > 0.5


def test_image_check_and_result_check_use_the_bounds():
    x = jnp.full((2, 2, 2, 1), -0.5)
    check_images(x, "x", bounds=(-1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        check_images(x, "x")
    with pytest.raises(ValueError, match=r"\[-0.25,1\]"):
        check_images(x, "x", bounds=(-0.25, 1.0))
    for bad in ((1.0, 0.0), (0.0, np.inf), (0.0,), (0.0, "a")):
        with pytest.raises(ValueError, match="bounds"):
            check_images(x, "x", bounds=bad)
    x = np.zeros((2, 2, 2, 1), np.float32)
    x_adv = x - np.float32(0.01) * np.array([1, 0], np.float32).reshape(2, 1, 1, 1)
    fooled = np.array([True, False])
    sanity_checks.check_result(x, x_adv, np.zeros(2, int), fooled, norm="linf", eps=0.05, bounds=(-1.0, 1.0))
    with pytest.raises(RuntimeError, match=r"outside \[0,1\]"):
        sanity_checks.check_result(x, x_adv, np.zeros(2, int), fooled, norm="linf", eps=0.05)


def test_autoattack_passes_its_bounds_to_every_attack_and_checks_results_in_them(monkeypatch):
    w = jax.random.normal(jax.random.key(22), (4 * 4 * 3, 4))
    apply_fn = lambda v, z: z.reshape(z.shape[0], -1) @ v
    x = np.asarray(jax.random.uniform(jax.random.key(23), (8, 4, 4, 3), minval=-1.0, maxval=1.0))
    y = np.asarray(jnp.argmax(apply_fn(w, x), -1))
    quiet = dict(log=None, progress=False, checks=False)
    attack = functools.partial(pgd, norm="linf", eps=0.2, step_size=0.05, steps=5, random_start=False,
                               bounds=(-1.0, 1.0))
    res = AutoAttack(apply_fn, norm="Linf", eps=0.2, version="custom", attacks=[("pgd", attack)],
                     bounds=(-1.0, 1.0), **quiet).run(w, x, y)
    assert res.robust_accuracy < 1.0
    assert res.x_adv.min() >= -1.0 and np.any((res.x_adv < x) & (x < 0))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        AutoAttack(apply_fn, norm="Linf", eps=0.2, version="custom", attacks=[("pgd", attack)], **quiet).run(w, x, y)

    seen = []

    def recorder(name):
        def run(logits_fn, xb, yb, key, **kw):
            seen.append((name, kw["bounds"]))
            return xb
        return run

    for name, mod in (("apgd", apgd_mod), ("fab", fab_mod), ("square", square_mod)):
        monkeypatch.setattr(mod, name, recorder(name))
    AutoAttack(apply_fn, norm="L2", eps=0.5, version="plus", bounds=(-1, 1), **quiet).run(w, x, y)
    assert {name for name, _ in seen} == {"apgd", "fab", "square"}
    assert all(bounds == (-1.0, 1.0) for _, bounds in seen)
