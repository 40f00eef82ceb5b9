"""ViT adversarial-training recipes (Mo et al. 2022, spec/vit_at.md): ARD (the model's `attn_grad_keep` hook
and its per-step draws in the attack), PRM (per-step patch masking of the perturbation) and their shared
schedule, wired into PGD-AT / TRADES / MART as `config.method.attack` fields.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robust_jax import attacks, methods, models
from robust_jax.attacks import ard_prm
from robust_jax.attacks.losses import cross_entropy, kl_divergence
from robust_jax.init_compile import jit_init
from robust_jax.methods.base import Classifier, PGDAttack
from robust_jax.methods.pgd_at import pgd_at_loss
from robust_jax.methods.trades import trades_loss

SMALL = dict(num_classes=10, mean=(0.5, 0.4, 0.3), std=(0.25, 0.3, 0.2), image_size=16, patch_size=4,
             hidden_dim=32, depth=2, num_heads=2)
EPS, STEP = 8 / 255, 2 / 255


@pytest.fixture(scope="module")
def vit():
    model = models.get("vit", **SMALL)
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=0.1, maxval=0.9)
    variables = jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(1))  # one program, not one per shape
    variables = jax.jit(_moved_off_init)(variables, jax.random.key(2))
    y = jnp.array([0, 3, 5, 9])
    return model, variables, x, y


def _moved_off_init(variables, key):
    """LayerNorm affine and biases moved off their init, so every term of the hand-written forward matters."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def _input_grad(model, variables, x, w, **hooks):
    return jax.grad(lambda z: jnp.sum(w * model.apply(variables, z, train=False, **hooks)))(x)


# ------------------------------------------------------------------------------------------------ ARD (model)
def test_model_exposes_the_ard_interface(vit):
    model = vit[0]
    assert model.num_attention_blocks == SMALL["depth"] and model.patch_size == SMALL["patch_size"]
    with pytest.raises(ValueError, match="attn_grad_keep must have shape"):
        model.apply(vit[1], vit[2], train=False, attn_grad_keep=jnp.ones(3, bool))


def test_ard_changes_gradients_never_values(vit):
    model, variables, x, _ = vit
    w = jax.random.normal(jax.random.key(3), (4, 10))
    plain = model.apply(variables, x, train=False)
    g_plain = _input_grad(model, variables, x, w)
    for keep in ([1, 1], [0, 1], [1, 0], [0, 0]):
        keep_b = jnp.array(keep, bool)
        np.testing.assert_array_equal(model.apply(variables, x, train=False, attn_grad_keep=keep_b), plain)
        np.testing.assert_array_equal(  # 0-1 floats are accepted too
            model.apply(variables, x, train=False, attn_grad_keep=jnp.array(keep, jnp.float32)), plain)
        g = _input_grad(model, variables, x, w, attn_grad_keep=keep_b)
        if all(keep):
            np.testing.assert_allclose(g, g_plain, rtol=1e-6, atol=1e-7)
        else:
            assert float(jnp.max(jnp.abs(g - g_plain))) > 1e-3 * float(jnp.max(jnp.abs(g_plain)))


def _layer_norm(x, p, eps=1e-6):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _hand_vit(params, x, probs=None):
    """The small ViT written out by hand. probs=None: softmax computed from x (returned for reuse); else the
    given per-block probabilities are used as constants (no function of x)."""
    cfg, p = SMALL, params
    ps, d, h = cfg["patch_size"], cfg["hidden_dim"], cfg["num_heads"]
    x = (x - jnp.array(cfg["mean"])) / jnp.array(cfg["std"])
    b, hh, ww, c = x.shape
    patches = x.reshape(b, hh // ps, ps, ww // ps, ps, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, ps * ps * c)
    kernel = p["patch_embed"]["proj"]["kernel"].reshape(ps * ps * c, d)
    t = patches @ kernel + p["patch_embed"]["proj"]["bias"]
    t = jnp.concatenate([jnp.broadcast_to(p["cls_token"], (b, 1, d)), t], 1) + p["pos_embed"]
    used = []
    for i in range(cfg["depth"]):
        blk = p[f"blocks_{i}"]
        y = _layer_norm(t, blk["norm1"])
        qkv = _dense(y, blk["attn"]["qkv"]).reshape(b, -1, 3, h, d // h).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv
        a = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) * (d // h) ** -0.5, -1) if probs is None else probs[i]
        used.append(a)
        o = jnp.einsum("bhqk,bhkd->bhqd", a, v).transpose(0, 2, 1, 3).reshape(b, -1, d)
        t = t + _dense(o, blk["attn"]["proj"])
        y = _layer_norm(t, blk["norm2"])
        y = _dense(jax.nn.gelu(_dense(y, blk["mlp"]["fc1"]), approximate=False), blk["mlp"]["fc2"])
        t = t + y
    t = _layer_norm(t, p["norm"])
    return _dense(t[:, 0], p["head"]), used


def test_all_blocks_dropped_equals_constant_softmax_by_hand(vit):
    model, variables, x, _ = vit
    w = jax.random.normal(jax.random.key(4), (4, 10))
    with jax.default_matmul_precision("highest"):
        logits_hand, probs = _hand_vit(variables["params"], x)
        np.testing.assert_allclose(logits_hand, model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)
        probs = [np.asarray(a) for a in probs]  # constants: values of the softmax at x, no function of x
        g_hand = jax.grad(lambda z: jnp.sum(w * _hand_vit(variables["params"], z, probs)[0]))(x)
        g_ard = _input_grad(model, variables, x, w, attn_grad_keep=jnp.zeros(2, bool))
        g_plain = _input_grad(model, variables, x, w)
    scale = float(jnp.max(jnp.abs(g_hand)))
    assert scale > 1e-3  # not zero: the values, projections and residuals still carry gradient
    np.testing.assert_allclose(g_ard, g_hand, atol=2e-5 * scale)
    assert float(jnp.max(jnp.abs(g_plain - g_hand))) > 1e-2 * scale


# --------------------------------------------------------------------------------------------- ARD (attack)
def _linear_logits(x):
    w = jnp.sin(jnp.arange(x[0].size * 10, dtype=jnp.float32)).reshape(-1, 10)
    return x.reshape(x.shape[0], -1) @ w


def _recording(fn, record):
    """fn with the points it is evaluated at (and its hooks) appended to `record` from inside the loop."""
    def hooked(**hooks):
        def keep(z_, h_):
            record.append((np.asarray(z_), {k: np.asarray(v) for k, v in h_.items()}))

        def logits_fn(z):
            jax.debug.callback(keep, z, hooks)
            return fn(z)
        return logits_fn
    return hooked


def test_ard_draws_fresh_switches_every_step():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=0.1, maxval=0.9)
    y = jnp.array([1, 2])
    record = []
    ard_prm.ard_prm_pgd(_recording(_linear_logits, record), x, y, jax.random.key(5), keep=0.5, ard_blocks=12,
                        eps=EPS, step_size=STEP, steps=8)
    draws = np.stack([h["attn_grad_keep"] for _, h in record])
    assert draws.shape == (8, 12) and draws.dtype == bool
    assert len({tuple(d) for d in draws}) > 1 and 0.2 < draws.mean() < 0.8
    record.clear()
    ard_prm.ard_prm_pgd(_recording(_linear_logits, record), x, y, jax.random.key(5), keep=1.0, ard_blocks=12,
                        eps=EPS, step_size=STEP, steps=3)
    assert all(h["attn_grad_keep"].all() for _, h in record)


def test_keep_one_is_plain_pgd(vit):
    model, variables, x, y = vit
    hooked = lambda **h: lambda z: model.apply(variables, z, train=False, **h)  # noqa: E731
    kw = dict(eps=EPS, step_size=STEP, steps=3)
    plain = attacks.pgd(hooked(), x, y, jax.random.key(6), **kw)
    both = ard_prm.ard_prm_pgd(hooked, x, y, jax.random.key(6), keep=1.0, ard_blocks=2, prm_patch=4, **kw)
    np.testing.assert_allclose(both, plain, atol=1e-6)
    dropped = ard_prm.ard_prm_pgd(hooked, x, y, jax.random.key(6), keep=0.0, ard_blocks=2, **kw)
    assert float(jnp.max(jnp.abs(dropped - plain))) > 0.5 * STEP  # ARD at keep 0 moves the attack


def test_step_setup_that_changes_nothing_is_plain_pgd():
    """pgd's step_setup hook in both loops (fori_loop, early-stopping while_loop): an identity setup gives
    plain PGD's iterates (its keys are independent of the start point's)."""
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3), minval=0.1, maxval=0.9)
    y = jnp.array([1, 2, 3])
    identity = lambda key, xa: (xa, _linear_logits)  # noqa: E731
    for early_stop in (False, True):
        kw = dict(eps=EPS, step_size=STEP, steps=4, early_stop=early_stop)
        np.testing.assert_array_equal(attacks.pgd(_linear_logits, x, y, jax.random.key(1), step_setup=identity, **kw),
                                      attacks.pgd(_linear_logits, x, y, jax.random.key(1), **kw))
    with pytest.raises(ValueError, match="needs a key"):
        attacks.pgd(_linear_logits, x, y, None, eps=EPS, step_size=STEP, steps=1, random_start=False,
                    step_setup=identity)


# ------------------------------------------------------------------------------ ARD never reaches the update
@pytest.mark.parametrize("loss_fn", [pgd_at_loss, trades_loss], ids=["pgd_at", "trades"])
def test_ard_never_reaches_the_training_gradient(vit, loss_fn):
    """The parameter gradient of the loss with ARD on equals that of the training objective evaluated by hand
    without hooks on the same x_adv; applying the hook in the training forward would change it (checked), and
    ARD changes x_adv (checked), so the equality is not vacuous."""
    model, variables, x, y = vit
    params = variables["params"]
    attack = PGDAttack(eps=EPS, step_size=STEP, steps=3, random_start="none", ard=True, ard_blocks=2, keep_max=0.0)
    batch, key = {"image": x, "label": y}, jax.random.key(7)
    grads = jax.grad(lambda p: loss_fn(model.apply, p, {}, batch, key, attack=attack)[0])(params)

    clf = Classifier(model.apply)
    if loss_fn is pgd_at_loss:
        x_adv = attack.run(clf, params, {}, x, y, key)
        x_plain = dataclasses.replace(attack, ard=False).run(clf, params, {}, x, y, key)

        def objective(p, **hooks):
            return jnp.mean(cross_entropy(model.apply({"params": p}, x_adv, train=True, **hooks), y))
    else:
        clean = model.apply(variables, x, train=False)
        kl = lambda logits, _: kl_divergence(clean, logits)  # noqa: E731
        x_adv = attack.run(clf, params, {}, x, y, key, loss=kl)
        x_plain = dataclasses.replace(attack, ard=False).run(clf, params, {}, x, y, key, loss=kl)

        def objective(p, **hooks):
            lg = model.apply({"params": p}, x, train=True, **hooks)
            la = model.apply({"params": p}, x_adv, train=True, **hooks)
            return jnp.mean(cross_entropy(lg, y)) + 6.0 * jnp.mean(kl_divergence(lg, la))
    assert float(jnp.max(jnp.abs(x_adv - x_plain))) > 0.5 * STEP
    expected = jax.grad(objective)(params)
    leaked = jax.grad(lambda p: objective(p, attn_grad_keep=jnp.zeros(2, bool)))(params)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    qkv = lambda t: t["blocks_0"]["attn"]["qkv"]["kernel"]  # noqa: E731
    assert float(jnp.max(jnp.abs(qkv(leaked) - qkv(expected)))) > 1e-3 * float(jnp.max(jnp.abs(qkv(expected))))


# ---------------------------------------------------------------------------------------------------- PRM
@pytest.mark.parametrize("keep", [0.0, 0.3, 0.5, 0.75, 0.9, 1.0])
def test_prm_mask_has_exactly_m_masked_patches(keep):
    mask = np.asarray(ard_prm.prm_mask(jax.random.key(8), 32, 32, 4, keep))
    assert mask.shape == (1, 32, 32, 1) and mask.dtype == bool
    per_patch = mask[0, :, :, 0].reshape(8, 4, 8, 4).transpose(0, 2, 1, 3).reshape(64, 16)
    assert (per_patch.all(1) | ~per_patch.any(1)).all()  # constant within each patch
    assert (~per_patch[:, 0]).sum() == int(64 * (1 - keep))
    with pytest.raises(ValueError, match="divide the image size"):
        ard_prm.prm_mask(jax.random.key(8), 30, 32, 4, keep)


def test_prm_masks_every_step_and_not_the_final_delta():
    """Each step starts from a point whose delta is zero on exactly int(N(1-p)) patches, a different choice
    per step; the step then moves every pixel: on the patches masked at the last step the returned delta
    is exactly +-step_size (reset to 0, one sign step, not re-masked)."""
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=0.2, maxval=0.8)
    y = jnp.array([1, 2])
    keep, patch, steps = 0.7, 4, 5
    n, m = 16, int(16 * (1 - 0.7))
    record = []
    x_adv = ard_prm.ard_prm_pgd(_recording(_linear_logits, record), x, y, jax.random.key(9), keep=keep,
                                prm_patch=patch, eps=EPS, step_size=STEP, steps=steps)
    assert len(record) == steps
    xs = np.asarray(x)

    def zero_patches(z):
        d = np.abs(z - xs).max(axis=(0, 3)).reshape(4, patch, 4, patch).max(axis=(1, 3))
        return d.reshape(n) == 0

    masked = [zero_patches(z) for z, _ in record]
    assert all(mk.sum() == m for mk in masked)
    assert len({tuple(mk) for mk in masked}) > 1
    delta = np.asarray(x_adv) - xs
    last = np.repeat(np.repeat(masked[-1].reshape(4, 4), patch, 0), patch, 1)
    np.testing.assert_allclose(np.abs(delta[:, last]), STEP, atol=1e-6)
    assert not zero_patches(np.asarray(x_adv)).any()


def test_prm_at_keep_zero_is_one_sign_step_from_clean(vit):
    model, variables, x, y = vit
    hooked = lambda **h: lambda z: model.apply(variables, z, train=False, **h)  # noqa: E731
    prm = ard_prm.ard_prm_pgd(hooked, x, y, jax.random.key(10), keep=0.0, prm_patch=4, eps=EPS, step_size=STEP,
                              steps=5, random_start=True)
    one = attacks.pgd(hooked(), x, y, None, eps=EPS, step_size=STEP, steps=1, random_start=False)
    np.testing.assert_allclose(prm, one, atol=1e-6)
    np.testing.assert_allclose(np.abs(np.asarray(prm - x)), STEP, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("keep_max", [1.0, 0.6])
def test_schedule_values(keep_max):
    n_w = 10.0
    for t, expected in ((0.0, 0.0), (n_w / 2, 0.5), (n_w, 1.0), (2.5 * n_w, 1.0), (3.7, 0.37)):
        got = ard_prm.keep_probability(t, keep_max=keep_max, warmup_epochs=n_w)
        np.testing.assert_allclose(got, expected * keep_max, rtol=1e-6)
    traced = jax.jit(lambda t: ard_prm.keep_probability(t, keep_max=keep_max, warmup_epochs=n_w))(jnp.float32(5))
    np.testing.assert_allclose(traced, 0.5 * keep_max, rtol=1e-6)
    assert float(ard_prm.keep_probability(3.0, keep_max=keep_max)) == pytest.approx(keep_max)  # no warm-up
    assert float(ard_prm.keep_probability(None, keep_max=keep_max, warmup_epochs=n_w)) == pytest.approx(keep_max)
    with pytest.raises(ValueError, match="keep_max"):
        ard_prm.keep_probability(1.0, keep_max=1.5)


# ------------------------------------------------------------------------------------------ config wiring
def _method_cfg(name, **attack):
    a = dict(methods.config_defaults()["attack"], eps=EPS, step_size=STEP, steps=2)
    a.update(attack)
    return ml_collections.ConfigDict(dict(methods.config_defaults(), name=name, attack=a))


def test_attack_fields_default_off():
    a = methods.config_defaults()["attack"]
    assert {k: a[k] for k in ("ard", "prm", "prm_patch", "keep_max", "keep_warmup_epochs")} == dict(
        ard=False, prm=False, prm_patch=0, keep_max=1.0, keep_warmup_epochs=0.0)
    assert "ard_blocks" not in a  # read from the model, not configured


@pytest.mark.parametrize("name", ["pgd_at", "trades", "mart"])
def test_adapters_fill_model_fields_and_follow_the_schedule(vit, name):
    model, variables, x, y = vit
    cfg = _method_cfg(name, ard=True, prm=True, keep_max=0.8, keep_warmup_epochs=2.0)
    method = methods.get(cfg, model, 10, steps_per_epoch=4)
    attack = method.settings["attack"]
    assert (attack.ard_blocks, attack.prm_patch) == (2, 4)
    assert float(method.epoch(6)) == 1.5 and float(attack.keep(method.epoch(6))) == pytest.approx(0.6)
    batch, key = {"image": x, "label": y}, jax.random.key(11)
    loss, _ = method.loss(variables["params"], {}, batch, key, jnp.int32(6))
    direct, _ = method.loss_fn(model.apply, variables["params"], {}, batch, key, attack=attack, epoch=1.5,
                               **{k: v for k, v in method.settings.items() if k != "attack"})
    np.testing.assert_allclose(loss, direct, rtol=1e-6)
    with pytest.raises(ValueError, match="steps per epoch"):
        methods.get(cfg, model, 10).loss(variables["params"], {}, batch, key, jnp.int32(0))


def test_ard_prm_are_rejected_where_they_do_not_apply(vit):
    for name in ("amp", "standard", "dat"):  # an attack block they would ignore is an error, not a silent no-op
        with pytest.raises(ValueError, match="pgd_at, trades"):
            methods.get(_method_cfg(name, ard=True, norm="l2"), vit[0], 10)
    cnn = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="attn_grad_keep"):
        methods.get(_method_cfg("pgd_at", ard=True), cnn, 10)
    with pytest.raises(ValueError, match="prm_patch"):
        methods.get(_method_cfg("pgd_at", prm=True), cnn, 10)
    methods.get(_method_cfg("pgd_at", prm=True, prm_patch=4), cnn, 10)  # PRM alone needs only a patch size


def test_plain_attack_is_unchanged_when_off(vit):
    """With ARD/PRM off, PGDAttack.run traces to exactly attacks.pgd's program."""
    model, variables, x, y = vit
    clf, params = Classifier(model.apply), variables["params"]
    attack = PGDAttack(eps=EPS, step_size=STEP, steps=2)
    key = jax.random.key(0)
    ours = jax.make_jaxpr(lambda z, k: attack.run(clf, params, {}, z, y, k))(x, key)
    ref = jax.make_jaxpr(lambda z, k: attacks.pgd(clf.logits_fn(params, {}, train=False), z, y, k, eps=EPS,
                                                  step_size=STEP, steps=2, random_start="uniform"))(x, key)
    assert str(ours) == str(ref)


@pytest.mark.parametrize("name", ["pgd_at", "trades", "mart"])
def test_training_forwards_of_the_adversarial_losses_run_drop_path(vit, name):
    """The reference trains its ViTs with drop path: the losses' training forwards get a dropout key (without
    one, Flax raises), and the drop path then changes the loss."""
    _, variables, x, y = vit
    batch = {"image": x, "label": y}
    attack = PGDAttack(eps=EPS, step_size=STEP, steps=1, random_start="none")
    loss_fn = getattr(methods, f"{name}_loss")

    def loss(drop_path_rate, key):
        model = models.get("vit", **SMALL, drop_path_rate=drop_path_rate)
        return float(loss_fn(model.apply, variables["params"], {}, batch, key, attack=attack)[0])

    plain = loss(0.0, jax.random.key(3))
    dropped = [loss(0.5, jax.random.key(k)) for k in (3, 4)]
    assert np.all(np.isfinite(dropped)) and dropped[0] != plain and dropped[0] != dropped[1]
