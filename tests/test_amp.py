"""AMP (methods/amp.py) against the three properties of ../shared/spec/amp.md, on a tiny model.

1. lambda fixed, Linf sign-PGD on the endpoints: both endpoints move identically, and the mixed point is PGD
   on the mixed point (`attacks.pgd` with the mixed CE).
2. lambda optimised, standard label: dL/dlambda is autodiff of the hand-written loss and holds
   CE(f, y_i) - CE(f, y_j); the geometric label removes that term.
3. reductions: lambda in {0, 1} or i = j gives PGD-AT's loss; eps = 0 with lambda fixed gives plain mixup's.
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from robust_jax import attacks, methods, mixing, models
from robust_jax.attacks.losses import cross_entropy
from robust_jax.init_compile import jit_init
from robust_jax.methods import amp as amp_lib
from robust_jax.methods.base import Classifier, PGDAttack

B, K = 6, 4
PERM = jnp.array([1, 2, 3, 4, 5, 0])  # no fixed point: every pair has two different images
LAM0 = jnp.array([0.2, 0.35, 0.5, 0.6, 0.75, 0.9])
ATTACK = PGDAttack(eps=0.1, step_size=0.03, steps=3, random_start="none")


@pytest.fixture(scope="module")
def setup():
    """small_cnn with scaled-up weights (predictions far from uniform) and non-trivial running statistics (train
    and eval mode differ); images in [0.3, 0.7], so that no [0,1] clip binds within eps = 0.1 of them."""
    model = models.get("small_cnn", num_classes=K, mean=(0.5,), std=(0.5,), widths=(4, 8, 8))
    x = 0.3 + 0.4 * jax.random.uniform(jax.random.key(0), (B, 8, 8, 1))
    v = jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(1))
    state = {"batch_stats": jax.tree.map(lambda a: 1.2 * a + 0.05, v["batch_stats"])}
    batch = {"image": x, "label": jnp.array([0, 1, 2, 3, 0, 1])}
    return model, jax.tree.map(lambda a: 2.0 * a, v["params"]), state, batch


def eval_logits_fn(setup):
    model, params, state, _ = setup
    return Classifier(model.apply).logits_fn(params, state, train=False)


def run_attack(setup, amp, attack=ATTACK, perm=PERM, lam0=LAM0, key=jax.random.key(3)):
    batch = setup[3]
    fn = jax.jit(lambda x, y, p, l, k: amp_lib.attack_points(eval_logits_fn(setup), x, y, p, l, k,
                                                             attack=attack, amp=amp))
    return fn(batch["image"], batch["label"], perm, lam0, key)


def objective(setup, key, perm, lam0, attack, **settings):
    model, params, state, batch = setup
    fn = jax.jit(lambda k, p, l: amp_lib.amp_objective(model.apply, params, state, batch, k, p, l, attack=attack,
                                                       amp=amp_lib.AMPSettings(**settings)))
    return fn(key, perm, lam0)


# ------------------------------------------------------------------------------------ property 1
def test_fixed_lambda_endpoint_pgd_moves_both_endpoints_identically_and_is_pgd_on_the_mixed_point(setup):
    x, y = setup[3]["image"], setup[3]["label"]
    (z_i, z_j), lam = run_attack(setup, amp_lib.AMPSettings())
    d_i, d_j = z_i - x, z_j - x[PERM]
    assert float(jnp.min(jnp.max(jnp.abs(d_i), axis=(1, 2, 3)))) > 0.05, "the endpoints must move"
    np.testing.assert_allclose(d_i, d_j, atol=1e-6)
    np.testing.assert_array_equal(lam, LAM0)

    y_j = y[PERM]
    mixed_ce = lambda logits, _: amp_lib.mixed_cross_entropy(logits, y, y_j, LAM0)
    clean_mix = amp_lib.interpolate(x, x[PERM], LAM0)
    reference = attacks.pgd(eval_logits_fn(setup), clean_mix, y, None, norm="linf", eps=ATTACK.eps,
                            step_size=ATTACK.step_size, steps=ATTACK.steps, loss=mixed_ce, random_start=False)
    np.testing.assert_allclose(amp_lib.mixed_point((z_i, z_j), lam), reference, atol=1e-5)
    (z_mix,), _ = run_attack(setup, amp_lib.AMPSettings(variant="mixed_point"))
    np.testing.assert_allclose(z_mix, reference, atol=1e-6)


# ------------------------------------------------------------------------------------ property 2
def endpoints(setup):
    """Two perturbed endpoints inside the box, away from the clean points."""
    x = setup[3]["image"]
    noise = jax.random.uniform(jax.random.key(7), (2,) + x.shape, minval=-0.1, maxval=0.1)
    return x + noise[0], x[PERM] + noise[1]


def lambda_gradient(setup, label_rule, lam):
    x, y = setup[3]["image"], setup[3]["label"]
    z = endpoints(setup)
    total = lambda l: jnp.sum(amp_lib.attack_objective(eval_logits_fn(setup), z, l, x, x[PERM], y, y[PERM],
                                                       label_rule=label_rule)[0])
    return jax.grad(total)(lam)


def test_lambda_gradient_of_the_standard_label_holds_the_label_term_and_the_geometric_rule_removes_it(setup):
    x, y = setup[3]["image"], setup[3]["label"]
    f = eval_logits_fn(setup)
    z_i, z_j = endpoints(setup)
    mix = lambda l: amp_lib._per_example(l, z_i) * z_i + (1 - amp_lib._per_example(l, z_i)) * z_j

    def hand_loss(l):  # written out: lambda CE(f(x~), y_i) + (1 - lambda) CE(f(x~), y_j), x~ = lambda z_i + ...
        logits = f(mix(l))
        return jnp.sum(l * cross_entropy(logits, y) + (1 - l) * cross_entropy(logits, y[PERM]))

    g_standard = lambda_gradient(setup, "standard", LAM0)
    np.testing.assert_allclose(g_standard, jax.grad(hand_loss)(LAM0), rtol=1e-5, atol=1e-6)

    # Chain rule at a fixed label weight: dL/dlambda = <dCE/dx~, z_i - z_j> + label term.
    logits = f(mix(LAM0))
    through_point = jax.grad(lambda m: jnp.sum(amp_lib.mixed_cross_entropy(f(m), y, y[PERM], LAM0)))(mix(LAM0))
    path = jnp.sum((through_point * (z_i - z_j)).reshape(B, -1), -1)
    label_term = cross_entropy(logits, y) - cross_entropy(logits, y[PERM])
    assert float(jnp.min(jnp.abs(label_term))) > 1e-3, "the pairs must have different CEs for the test to bite"
    np.testing.assert_allclose(g_standard - path, label_term, rtol=1e-4, atol=1e-5)

    g_geometric = lambda_gradient(setup, "geometric", LAM0)
    w = amp_lib.geometric_weight(mix(LAM0), x, x[PERM], LAM0)
    through_point_w = jax.grad(lambda m: jnp.sum(amp_lib.mixed_cross_entropy(f(m), y, y[PERM], w)))(mix(LAM0))
    np.testing.assert_allclose(g_geometric, jnp.sum((through_point_w * (z_i - z_j)).reshape(B, -1), -1),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sign", [True, False])
def test_one_lambda_step_follows_the_lambda_gradient_within_its_window(setup, sign):
    x = setup[3]["image"]
    attack = PGDAttack(eps=0.0, step_size=0.0, steps=1, random_start="none")  # points stay: only lambda moves
    amp = amp_lib.AMPSettings(lambda_mode="optimised", lambda_step=0.1, lambda_sign=sign, lambda_window=0.05)
    _, lam = run_attack(setup, amp, attack=attack)
    x_i, x_j, y = x, x[PERM], setup[3]["label"]
    g = jax.grad(lambda l: jnp.sum(amp_lib.attack_objective(eval_logits_fn(setup), (x_i, x_j), l, x_i, x_j, y,
                                                            y[PERM], label_rule="standard")[0]))(LAM0)
    move = 0.1 * (jnp.sign(g) if sign else g)
    np.testing.assert_allclose(lam, jnp.clip(LAM0 + move, LAM0 - 0.05, LAM0 + 0.05), atol=1e-6)
    assert float(jnp.max(jnp.abs(lam - LAM0))) > 1e-4


def test_geometric_weight_is_the_position_on_the_clean_segment_and_guards_identical_endpoints():
    a, b = jnp.full((2, 2, 2, 1), 0.8), jnp.full((2, 2, 2, 1), 0.2)
    b = b.at[1].set(0.8)  # second pair: identical endpoints
    lam = jnp.array([0.3, 0.4])
    w = amp_lib.geometric_weight(0.25 * a + 0.75 * b, a, b, lam)
    np.testing.assert_allclose(w, [0.25, 0.4], atol=1e-6)
    np.testing.assert_allclose(amp_lib.geometric_weight(a + 0.5, a, b, lam)[0], 1.0)  # beyond x_i: clipped
    assert np.all(np.isfinite(jax.grad(lambda m: jnp.sum(amp_lib.geometric_weight(m, a, b, lam)))(a)))


# ------------------------------------------------------------------------------------ property 3
@pytest.mark.parametrize("train_mode", [False, True])
def test_lambda_one_or_zero_is_pgd_at(setup, train_mode):
    model, params, state, batch = setup
    attack = PGDAttack(eps=0.1, step_size=0.03, steps=3, random_start="uniform", train_mode=train_mode)
    key = jax.random.key(4)
    loss, (new_state, metrics) = objective(setup, key, PERM, jnp.ones(B), attack)
    ref_loss, (ref_state, _) = methods.pgd_at_loss(model.apply, params, state, batch, key, attack=attack)
    # Same adversarial points, same loss and running statistics, to the rounding of a separately compiled
    # program (a different draw or endpoint moves the loss by orders of magnitude more).
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), new_state, ref_state)
    assert float(metrics["lambda"]) == 1.0

    # lambda = 0: the partner's endpoint alone, which starts from fold_in(key, 1).
    loss0, _ = objective(setup, key, PERM, jnp.zeros(B), attack)
    permuted = {"image": batch["image"][PERM], "label": batch["label"][PERM]}
    ref0, _ = methods.pgd_at_loss(model.apply, params, state, permuted, jax.random.fold_in(key, 1), attack=attack)
    np.testing.assert_allclose(loss0, ref0, rtol=1e-6)


@pytest.mark.parametrize("lambda_mode", ["fixed", "optimised"])
def test_pairing_each_example_with_itself_is_pgd_at(setup, lambda_mode):
    model, params, state, batch = setup
    key = jax.random.key(5)
    loss, (_, metrics) = objective(setup, key, jnp.arange(B), LAM0, ATTACK, lambda_mode=lambda_mode)
    ref_loss, _ = methods.pgd_at_loss(model.apply, params, state, batch, key, attack=ATTACK)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["lambda"], jnp.mean(LAM0), rtol=1e-6)  # dL/dlambda = 0: lambda stays


def test_eps_zero_with_fixed_lambda_is_plain_mixup(setup):
    model, params, state, batch = setup
    x, y = batch["image"], batch["label"]
    attack = PGDAttack(eps=0.0, step_size=0.03, steps=3, random_start="uniform")
    loss, (new_state, metrics) = objective(setup, jax.random.key(6), PERM, LAM0, attack, mixup_weight=1.0)

    lam = LAM0[:, None, None, None]
    onehot = mixing.smooth(y, K)
    targets = LAM0[:, None] * onehot + (1 - LAM0[:, None]) * onehot[PERM]
    logits, _ = model.apply({"params": params, **state}, lam * x + (1 - lam) * x[PERM], train=True,
                            mutable=["batch_stats"])
    mixup_loss = jnp.mean(cross_entropy(logits, targets))
    np.testing.assert_allclose(metrics["adv_loss"], mixup_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["mixup_loss"], mixup_loss, rtol=1e-6)
    np.testing.assert_allclose(loss, 2 * mixup_loss, rtol=1e-6)


# ------------------------------------------------------------------------------------ config and API
def test_loss_keywords_are_the_config_block():
    signature = inspect.signature(methods.amp_loss).parameters
    assert {k: signature[k].default for k in amp_lib.CONFIG["amp"]} == amp_lib.CONFIG["amp"]
    assert amp_lib.CONFIG["attack"] == methods.pgd_at.CONFIG["attack"]
    with pytest.raises(ValueError, match="lambda_mode"):
        amp_lib.AMPSettings(lambda_mode="learned")
    with pytest.raises(ValueError, match="mixed_point"):
        amp_lib.AMPSettings(variant="mixed_point", lambda_mode="optimised")


@pytest.mark.parametrize("settings", [dict(), dict(lambda_mode="optimised", label_rule="geometric", norm="l2",
                                                   clean_weight=0.5, mixup_weight=0.5),
                                      dict(variant="mixed_point")])
def test_config_adapter_runs_every_variant(setup, settings):
    model, params, state, batch = setup
    cfg = common.base().method
    cfg.name = "amp"
    cfg.attack = common.attack(eps=0.1, step_size=0.05, steps=2, norm=settings.pop("norm", "linf"))
    cfg.amp.update(settings)
    loss, (new_state, metrics) = methods.get(cfg, model, K).loss(params, state, batch, jax.random.key(8), 0)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert {"loss", "adv_accuracy", "lambda", "label_weight"} <= set(metrics)
    assert 0.0 <= float(metrics["lambda"]) <= 1.0
