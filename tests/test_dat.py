"""DAT: the discrete L2 attack and the training step against hand-written computations of the reference's
step (easyrobust's DAT `train_one_epoch`, as spec'd in docs/dat.md), with the same random start."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robust_jax import methods, mixing, models, state as state_lib
from robust_jax.attacks import discrete
from robust_jax.attacks.losses import cross_entropy
from robust_jax.models import variables_io

EPS = 0.1
TINY_VQGAN = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, n_embed=32,
                  z_channels=4, embed_dim=4, in_channels=1, out_ch=1)


def _l2(v):
    return np.sqrt(np.sum(np.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def test_sphere_start_is_on_the_sphere_with_one_coin_per_batch():
    center = jnp.full((6, 8, 8, 3), 0.5)
    moved = np.asarray(discrete.sphere_start(jax.random.key(0), center, eps=EPS, start_prob=1.0))
    np.testing.assert_allclose(_l2(moved - 0.5).ravel(), EPS, rtol=1e-5)
    same = discrete.sphere_start(jax.random.key(0), center, eps=EPS, start_prob=0.0)
    np.testing.assert_array_equal(same, center)
    outcomes = []
    for i in range(200):
        x = np.asarray(discrete.sphere_start(jax.random.key(i), center, eps=EPS, start_prob=0.8))
        per_example = (np.abs(x - 0.5).reshape(6, -1).max(1) > 0)
        assert per_example.all() or not per_example.any(), "the coin is one draw for the whole batch"
        outcomes.append(per_example[0])
    assert 0.72 < np.mean(outcomes) < 0.88


def test_projection_scales_only_outside_the_ball_with_the_reference_constant():
    center = jnp.full((2, 4, 4, 1), 0.5)
    direction = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    direction /= _l2(direction)
    x = center + jnp.asarray(direction * np.array([0.05, 0.3]).reshape(2, 1, 1, 1))
    out = np.asarray(discrete.project_l2(x, center, eps=EPS))
    np.testing.assert_allclose(out[0], np.asarray(x[0]), atol=1e-7)  # inside: unchanged
    np.testing.assert_allclose(out[1] - 0.5, direction[1] * 0.3 * EPS / (0.3 + 1e-7), atol=1e-6)


def _small_cnn(num_classes=10):
    model = models.get("small_cnn", num_classes=num_classes, mean=(0.5,), std=(0.5,), widths=(8, 16))
    variables = model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 1)), train=False)
    return model, variables


def _train_logits(model, params, model_state, x, key=None):
    """The classifier in train mode (batch statistics), as the reference's attack and loss see it."""
    logits, new = model.apply({"params": params, **model_state}, x, train=True, bn="clean",
                              mutable=list(model_state), rngs=None if key is None else {"dropout": key})
    return logits, {**model_state, **new}


def _reference_attack(model, params, model_state, center, targets, coin, noise, *, eps, step, grad_at=None):
    """The reference's one-step attack written out in numpy (model gradients from JAX)."""
    grad_at = grad_at or (lambda v: v)
    c = np.asarray(center, np.float64)
    x0 = np.clip(c + eps * noise / (_l2(noise) + 1e-10), 0, 1) if coin else c
    x0 = x0.astype(np.float32)
    g = np.asarray(jax.grad(lambda v: jnp.mean(cross_entropy(_train_logits(model, params, model_state, v)[0],
                                                             targets)))(grad_at(jnp.asarray(x0))), np.float64)
    x1 = x0 + step * g / (_l2(g) + 1e-10)
    delta = x1 - c
    n = _l2(delta)
    delta = np.where(n > eps, delta * eps / (n + 1e-7), delta)
    return np.clip(c + delta, 0, 1)


def _start_draws(key, shape):
    """The coin and the noise `discrete_l2_attack` draws from `key` (its documented key layout)."""
    k_start, _ = jax.random.split(key)
    k_coin, k_noise = jax.random.split(k_start)
    return bool(jax.random.bernoulli(k_coin, 0.8)), np.asarray(jax.random.normal(k_noise, shape), np.float64)


def test_attack_matches_the_hand_written_reference_step():
    model, variables = _small_cnn()
    params, model_state = variables["params"], {"batch_stats": variables["batch_stats"]}
    x = jax.random.uniform(jax.random.key(2), (8, 16, 16, 1))
    targets = mixing.smooth(jnp.arange(8) % 10, 10, 0.1)  # soft targets, as after mixup / label smoothing
    coins = set()
    for seed in (100, 101, 106):  # 106 draws no random start
        key = jax.random.key(seed)
        coin, noise = _start_draws(key, x.shape)
        coins.add(coin)
        loss = lambda v, k: jnp.mean(cross_entropy(_train_logits(model, params, model_state, v, k)[0], targets))
        ours = discrete.discrete_l2_attack(loss, x, key, eps=EPS, step_size=EPS, steps=1, start_prob=0.8)
        ref = _reference_attack(model, params, model_state, x, targets, coin, noise, eps=EPS, step=EPS)
        np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-6)
        assert np.all(_l2(np.asarray(ours) - np.asarray(x)) <= EPS + 1e-6)
    assert coins == {True, False}, "the seeds must cover both outcomes of the start coin"


def _dat_cfg(checkpoint, **dat):
    c = ml_collections.ConfigDict(dict(
        name="dat", label_smoothing=0.1, mixup_alpha=0.0, cutmix_alpha=0.0,
        attack=dict(norm="l2", eps=EPS, step_size=EPS, steps=1, loss="ce", random_start="none", train_mode=True),
        vqgan=dict(checkpoint=checkpoint, name="openimages_f8_16384", kwargs=TINY_VQGAN),
        dat=dict(variant="reference", start_prob=0.8)))
    c.dat.update(dat)
    return c


@pytest.fixture(scope="module")
def vqgan_file(tmp_path_factory):
    from robust_jax.models import vqgan

    model = vqgan.get("openimages_f8_16384", **TINY_VQGAN)
    variables = model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 1)))
    path = str(tmp_path_factory.mktemp("vq") / "tiny_vqgan.msgpack")
    variables_io.save_variables(path, variables)
    return path


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_dat_loss_matches_the_hand_written_reference(vqgan_file, variant):
    from robust_jax.models import vqgan

    model, variables = _small_cnn()
    params, model_state = variables["params"], {"batch_stats": variables["batch_stats"]}
    dat = methods.get(_dat_cfg(vqgan_file, variant=variant), model, 10)
    x = jax.random.uniform(jax.random.key(4), (8, 16, 16, 1))
    batch = {"image": x, "label": jnp.arange(8) % 10}
    key = jax.random.key(5)
    loss, (new_state, metrics) = jax.jit(dat.loss)(params, model_state, batch, key, 0, dat.frozen)

    # By hand: no mixing configured, so the mixing key is unused; targets are the smoothed labels.
    _, _, k_attack, _ = jax.random.split(key, 4)
    targets = mixing.smooth(batch["label"], 10, 0.1)
    vq = dat.vqgan
    q = lambda v: vq.apply(dat.frozen["vqgan"], v, method=vq.reconstruct)
    clean_logits, state1 = _train_logits(model, params, model_state, x)
    center = x if variant == "paper" else q(x)
    coin, noise = _start_draws(k_attack, x.shape)
    x_adv = _reference_attack(model, params, state1, center, targets, coin, noise, eps=EPS, step=EPS,
                              grad_at=q if variant == "paper" else None)
    adv_logits, state2 = _train_logits(model, params, state1, q(jnp.asarray(x_adv, jnp.float32)))
    clean_loss = float(jnp.mean(cross_entropy(clean_logits, targets)))
    adv_loss = float(jnp.mean(cross_entropy(adv_logits, targets)))
    np.testing.assert_allclose(float(metrics["clean_loss"]), clean_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["adv_loss"]), adv_loss, rtol=1e-4)
    np.testing.assert_allclose(float(loss), clean_loss + adv_loss, rtol=1e-4)
    # BatchNorm running statistics follow the two training passes (clean, then adversarial) only.
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert isinstance(vq, vqgan.VQModel)


def test_vqgan_gets_no_gradient_and_is_not_a_program_constant(vqgan_file):
    """The frozen VQGAN reaches the step as an argument: the compiled program must not embed its weights."""
    import optax

    model, variables = _small_cnn()
    dat = methods.get(_dat_cfg(vqgan_file), model, 10)
    tx = optax.sgd(0.1)
    st = state_lib.create(variables, tx, ema=False)
    step = jax.jit(state_lib.make_train_step(dat, tx))
    batch = {"image": jax.random.uniform(jax.random.key(6), (8, 16, 16, 1)), "label": jnp.arange(8) % 10}
    hlo = step.lower(st, batch, jax.random.key(7), dat.frozen).as_text()
    vq_bytes = sum(a.size * 4 for a in jax.tree.leaves(dat.frozen))
    assert vq_bytes > 1_000_000 and len(hlo) < vq_bytes / 2
    new, metrics = step(st, batch, jax.random.key(7), dat.frozen)
    assert int(metrics["nonfinite"]) == 0 and int(new.step) == 1


def test_configuration_errors_are_explicit(vqgan_file):
    model, _ = _small_cnn()
    with pytest.raises(ValueError, match="configs/vqgan_digits.py"):
        methods.get(_dat_cfg(""), model, 10)
    cfg = _dat_cfg(vqgan_file)
    cfg.vqgan.name = ""
    with pytest.raises(ValueError, match="method.vqgan.name"):
        methods.get(cfg, model, 10)
    with pytest.raises(ValueError, match="variant"):
        methods.get(_dat_cfg(vqgan_file, variant="both"), model, 10)
    cfg = _dat_cfg(vqgan_file)
    cfg.attack.norm = "linf"
    with pytest.raises(ValueError, match="L2"):
        methods.get(cfg, model, 10)
    with pytest.raises(FileNotFoundError):
        methods.get(_dat_cfg(os.path.join(os.path.dirname(vqgan_file), "missing.msgpack")), model, 10)
