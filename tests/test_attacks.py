"""PGD/FGSM: constraints, exact answers on linear models, flat compile size, strength."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import fgsm, losses, pgd


def linear_model(w):
    """logits = flatten(x) @ w."""
    return lambda x: x.reshape(x.shape[0], -1) @ w


@pytest.fixture
def binary_problem():
    k1, k2 = jax.random.split(jax.random.key(0))
    w = jax.random.normal(k1, (2 * 2 * 3, 2))
    x = jax.random.uniform(k2, (6, 2, 2, 3), minval=0.3, maxval=0.7)  # away from the [0,1] box
    y = jnp.array([0, 1, 0, 1, 1, 0])
    return w, x, y


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.05, 0.02), ("l2", 0.4, 0.15)])
@pytest.mark.parametrize("random_start", [True, False, "normal"])
def test_stays_in_ball_and_box(norm, eps, step, random_start):
    w = jax.random.normal(jax.random.key(1), (4 * 4 * 3, 5))
    x = jax.random.uniform(jax.random.key(2), (8, 4, 4, 3))
    x = x.at[0].set(0.0).at[1].set(1.0)  # corners, where clipping matters
    y = jnp.arange(8) % 5
    xa = pgd(linear_model(w), x, y, jax.random.key(3), norm=norm, eps=eps, step_size=step, steps=7,
             random_start=random_start)
    d = (xa - x).reshape(8, -1)
    size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
    assert float(jnp.max(size)) <= eps * (1 + 1e-5)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(jnp.max(size)) > 0.5 * eps  # it moved


def test_linf_exact_on_linear_binary_model(binary_problem):
    """For two classes the CE gradient direction is constant: the optimum is x + eps*sign(w_other - w_y)."""
    w, x, y = binary_problem
    eps = 0.1
    direction = jnp.sign(w[:, 1 - y] - w[:, y]).T.reshape(x.shape)
    xa = pgd(linear_model(w), x, y, None, norm="linf", eps=eps, step_size=eps / 4, steps=6, random_start=False)
    np.testing.assert_allclose(xa, x + eps * direction, atol=1e-6)
    np.testing.assert_allclose(fgsm(linear_model(w), x, y, eps=eps), x + eps * direction, atol=1e-6)


def test_l2_exact_on_linear_binary_model(binary_problem):
    w, x, y = binary_problem
    eps = 0.3
    d = (w[:, 1 - y] - w[:, y]).T
    expected = x + (eps * d / jnp.linalg.norm(d, axis=1, keepdims=True)).reshape(x.shape)
    xa = pgd(linear_model(w), x, y, None, norm="l2", eps=eps, step_size=eps / 2, steps=5, random_start=False,
             loss="cw")
    np.testing.assert_allclose(xa, expected, atol=1e-5)


def test_targeted_moves_towards_target():
    w = jax.random.normal(jax.random.key(4), (12, 4))
    x = jax.random.uniform(jax.random.key(5), (16, 2, 2, 3), minval=0.3, maxval=0.7)
    target = jnp.full((16,), 3)
    f = linear_model(w)
    xa = pgd(f, x, target, jax.random.key(6), eps=0.2, step_size=0.05, steps=10, targeted=True)
    before = losses.cross_entropy(f(x), target)
    after = losses.cross_entropy(f(xa), target)
    assert bool(jnp.all(after < before))


def test_early_stop_keeps_first_success_and_freezes_fooled_points():
    w = jax.random.normal(jax.random.key(7), (12, 3))
    x = jax.random.uniform(jax.random.key(8), (32, 2, 2, 3))
    f = linear_model(w)
    y = jnp.argmax(f(x), -1).at[:4].set((jnp.argmax(f(x), -1)[:4] + 1) % 3)  # first 4 already misclassified
    kwargs = dict(eps=0.3, step_size=0.05, steps=20, random_start=False)
    xa = pgd(f, x, y, None, early_stop=True, **kwargs)
    np.testing.assert_array_equal(xa[:4], x[:4])  # nothing to do for them
    full = pgd(f, x, y, None, **kwargs)
    fooled_full = jnp.argmax(f(full), -1) != y
    fooled_early = jnp.argmax(f(xa), -1) != y
    assert bool(jnp.all(fooled_early >= fooled_full))
    moved = jnp.max(jnp.abs(xa - x).reshape(32, -1), 1)
    moved_full = jnp.max(jnp.abs(full - x).reshape(32, -1), 1)
    assert float(jnp.sum(moved)) < float(jnp.sum(moved_full))  # stopped early where it could


def _model_fn():
    from robust_jax import models

    model = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,))
    x = jnp.full((4, 16, 16, 1), 0.5)
    v = model.init(jax.random.key(0), x, train=False)
    return (lambda xx: model.apply(v, xx, train=False)), x


def test_program_size_does_not_grow_with_steps():
    f, x = _model_fn()
    y = jnp.zeros(4, jnp.int32)
    sizes = []
    for steps in (2, 50):
        attack = lambda xx, yy, k: pgd(f, xx, yy, k, eps=0.1, step_size=0.01, steps=steps)
        jaxpr = str(jax.make_jaxpr(attack)(x, y, jax.random.key(0)))
        hlo = jax.jit(attack).lower(x, y, jax.random.key(0)).as_text()
        sizes.append((jaxpr.count("\n"), hlo.count("\n")))  # lines: independent of the constant's digits
    assert sizes[0] == sizes[1]


def test_bad_inputs_fail_loudly():
    f = linear_model(jnp.ones((12, 2)))
    x = jnp.full((2, 2, 2, 3), 0.5)
    y = jnp.zeros(2, jnp.int32)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        pgd(f, x * 300, y, None, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="rank 4"):
        pgd(f, x[0], y, None, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="dtype"):
        pgd(f, (x * 255).astype(jnp.uint8), y, None, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="norm"):
        pgd(f, x, y, None, norm="l3", eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="loss"):
        pgd(f, x, y, None, eps=0.1, step_size=0.1, steps=1, loss="hinge")



def test_losses():
    logits = jnp.array([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]])
    y = jnp.array([0, 2])
    np.testing.assert_allclose(losses.margin(logits, y), [1.0 - 2.0, 3.0 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(losses.cross_entropy(logits, y),
                               -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(losses.cross_entropy(logits, jax.nn.one_hot(y, 3)), losses.cross_entropy(logits, y),
                               rtol=1e-6)
    p = jax.nn.softmax(logits)
    q = jax.nn.softmax(logits[::-1])
    np.testing.assert_allclose(losses.kl_divergence(logits, logits[::-1]), jnp.sum(p * jnp.log(p / q), -1), rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(logits, logits), 0.0, atol=1e-6)


def test_image_check_works_on_a_concrete_array_closed_over_in_jit():
    """A concrete array captured by a closure is checked (and rejected if out of range) inside jax.jit."""
    from robust_jax.checks import check_images

    good = jnp.full((1, 2, 2, 1), 0.5)
    bad = jnp.full((1, 2, 2, 1), 2.0)

    def run(images):
        check_images(images)
        return jnp.zeros(())

    jax.jit(lambda: run(good))()
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        jax.jit(lambda: run(bad))()
