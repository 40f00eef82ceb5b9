"""Training objectives against hand computations of the reference formulas on a tiny model."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from robust_jax import methods, models

EPS, STEP, STEPS, BETA = 0.1, 0.03, 3, 6.0


@pytest.fixture(scope="module")
def setup():
    model = models.get("small_cnn", num_classes=4, mean=(0.5,), std=(0.5,), widths=(4, 8, 8))
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
    y = jnp.array([0, 1, 2, 3, 0, 1])
    v = model.init(jax.random.key(1), x, train=False)
    # Non-trivial running statistics, so train-mode and eval-mode forward passes differ.
    v = jax.tree.map(lambda a: a, v)
    v["batch_stats"] = jax.tree.map(lambda a: a + 0.3, v["batch_stats"])
    params = v["params"]
    state = {"batch_stats": v["batch_stats"]}
    return model, params, state, {"image": x, "label": y}


def method_config(name, random_start, train_mode=False):
    c = ml_collections.ConfigDict(dict(name=name, beta=BETA))
    c.attack = common.attack(eps=EPS, step_size=STEP, steps=STEPS, random_start=random_start, train_mode=train_mode)
    return c


def apply(model, params, state, x, train):
    if train:
        return model.apply({"params": params, **state}, x, train=True, mutable=["batch_stats"])
    return model.apply({"params": params, **state}, x, train=False), state


def hand_attack(model, params, state, x, y, key, loss_fn, train_mode):
    """The reference loop, written out: x + 0.001 N(0,I), sign steps, clamp to the ball and [0,1]."""
    xa = x + 0.001 * jax.random.normal(key, x.shape)
    for _ in range(STEPS):
        g = jax.grad(lambda z: jnp.sum(loss_fn(apply(model, params, state, z, train_mode)[0])))(xa)
        xa = jnp.clip(jnp.clip(xa + STEP * jnp.sign(g), x - EPS, x + EPS), 0.0, 1.0)
    return xa


def test_trades_matches_reference_formula(setup):
    model, params, state, batch = setup
    x, y = batch["image"], batch["label"]
    key = jax.random.key(5)
    method = methods.get(method_config("trades", "normal"), model, 4)
    loss, (new_state, metrics) = method.loss(params, state, batch, key, 0)

    clean_eval = apply(model, params, state, x, False)[0]
    p_clean = jax.nn.softmax(clean_eval)
    kl_sum = lambda logits: jnp.sum(p_clean * (jnp.log(p_clean) - jax.nn.log_softmax(logits)), -1)
    xa = hand_attack(model, params, state, x, y, key, kl_sum, train_mode=False)
    logits, s1 = apply(model, params, state, x, True)
    logits_adv, s2 = apply(model, params, s1, xa, True)
    natural = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
    p = jax.nn.softmax(logits)
    robust = jnp.sum(p * (jax.nn.log_softmax(logits) - jax.nn.log_softmax(logits_adv))) / x.shape[0]
    np.testing.assert_allclose(loss, natural + BETA * robust, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new_state, s2)


def test_mart_matches_reference_formula(setup):
    model, params, state, batch = setup
    x, y = batch["image"], batch["label"]
    key = jax.random.key(6)
    method = methods.get(method_config("mart", "normal"), model, 4)
    loss, _ = method.loss(params, state, batch, key, 0)

    ce = lambda logits: -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    xa = hand_attack(model, params, state, x, y, key, ce, train_mode=False)
    logits, s1 = apply(model, params, state, x, True)
    logits_adv, _ = apply(model, params, s1, xa, True)
    adv_probs = np.asarray(jax.nn.softmax(logits_adv))
    order = np.argsort(adv_probs, axis=1)[:, -2:]
    new_y = np.where(order[:, -1] == np.asarray(y), order[:, -2], order[:, -1])
    bce = np.mean(np.asarray(ce(logits_adv))) + np.mean(
        -np.log(1.0001 - adv_probs + 1e-12)[np.arange(6), new_y])
    nat = np.asarray(jax.nn.softmax(logits))
    kl = np.sum(nat * (np.log(nat) - np.log(adv_probs + 1e-12)), 1)
    true_probs = nat[np.arange(6), np.asarray(y)]
    robust = np.sum(kl * (1.0000001 - true_probs)) / 6
    np.testing.assert_allclose(loss, bce + BETA * robust, rtol=1e-4)


@pytest.mark.parametrize("train_mode", [False, True])
def test_pgd_at_attacks_in_the_configured_mode_without_gradient_leak(setup, train_mode):
    model, params, state, batch = setup
    x, y = batch["image"], batch["label"]
    key = jax.random.key(7)
    method = methods.get(method_config("pgd_at", "uniform", train_mode), model, 4)
    (loss, (new_state, _)), grads = jax.value_and_grad(method.loss, has_aux=True)(params, state, batch, key, 0)

    from robust_jax.attacks import pgd

    logits_fn = lambda z: apply(model, params, state, z, train_mode)[0]
    xa = pgd(logits_fn, x, y, key, eps=EPS, step_size=STEP, steps=STEPS, random_start="uniform")
    other = pgd(lambda z: apply(model, params, state, z, not train_mode)[0], x, y, key, eps=EPS, step_size=STEP,
                steps=STEPS, random_start="uniform")
    assert not np.allclose(xa, other)  # the mode matters for this model, so the check below is meaningful

    def ce_at(p):
        logits, _ = apply(model, p, state, xa, True)
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    expected_loss, expected_grads = jax.value_and_grad(ce_at)(params)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, expected_grads)


def test_standard_with_mixup_gives_soft_targets(setup):
    model, params, state, batch = setup
    c = method_config("standard", "none")
    with c.unlocked():
        c.mixup_alpha, c.cutmix_alpha, c.label_smoothing = 0.4, 0.0, 0.1
    method = methods.get(c, model, 4)
    x_mix, targets = method.targets(batch, jax.random.key(3))
    assert targets.shape == (6, 4)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    assert not np.allclose(x_mix, batch["image"])
    loss, _ = method.loss(params, state, batch, jax.random.key(3), 0)
    assert np.isfinite(loss)


def test_pgd_at_with_mixing_attacks_and_trains_on_the_soft_targets(setup):
    """The reference's PGD-AT mixes the batch before the attack: the attack ascends, and the loss is, the CE to
    the soft targets of the mixed batch (hand computation with a fixed mixing)."""
    model, params, state, batch = setup
    x, y = batch["image"], batch["label"]
    x_mix = 0.4 * x + 0.6 * x[::-1]
    soft = 0.4 * jax.nn.one_hot(y, 4) + 0.6 * jax.nn.one_hot(y[::-1], 4)
    fixed_mixing = lambda key, images, labels: (x_mix, soft)
    key = jax.random.key(8)
    attack = methods.PGDAttack(eps=EPS, step_size=STEP, steps=STEPS, random_start="uniform", train_mode=True)
    loss, (_, metrics) = methods.pgd_at_loss(model.apply, params, state, batch, key, attack=attack,
                                             mixing=fixed_mixing)

    from robust_jax.attacks import pgd

    soft_ce = lambda logits, t: -jnp.sum(t * jax.nn.log_softmax(logits), -1)
    xa = pgd(lambda z: apply(model, params, state, z, True)[0], x_mix, soft, key, eps=EPS, step_size=STEP,
             steps=STEPS, loss=soft_ce, random_start="uniform")
    hard = pgd(lambda z: apply(model, params, state, z, True)[0], x_mix, y, key, eps=EPS, step_size=STEP,
               steps=STEPS, random_start="uniform")
    assert not np.allclose(xa, hard)  # the attack's targets matter here, so the check below is meaningful
    expected = jnp.mean(soft_ce(apply(model, params, state, xa, True)[0], soft))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert 0.0 <= float(metrics["adv_accuracy"]) <= 1.0


def test_pgd_at_reads_the_mixing_fields_of_its_config(setup):
    from robust_jax import mixing

    model = setup[0]
    c = method_config("pgd_at", "uniform")
    assert methods.get(c, model, 4).settings["mixing"] is None  # no mixing fields set: the batch as it is
    with c.unlocked():
        c.update(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.3, cutmix_prob=0.5)
    assert methods.get(c, model, 4).settings["mixing"] == mixing.BatchMixing(
        num_classes=4, mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.3, cutmix_prob=0.5)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'madry'"):
        methods.get(ml_collections.ConfigDict({"name": "madry"}), None, 10)
