"""AdvBN: the layer (identity, statistics per group, use in a foreign network), its sign-ascent attack, the
method's step (frozen front, separate BN sets), single -> dual BN initialisation and BN-branch evaluation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from robust_jax import builders, methods, models, optim, state as state_lib
from robust_jax.attacks import feature_stats
from robust_jax.attacks.losses import cross_entropy
from robust_jax.evaluation import bn_branch, runner
from robust_jax.init_compile import jit_init
from robust_jax.models import advbn, dual_bn, init_source, variables_io


def _features(shape=(8, 5, 5, 6), seed=0):
    return jax.nn.relu(jax.random.normal(jax.random.key(seed), shape)) + 0.1


def test_layer_is_the_identity_without_perturbation_and_at_one():
    f = _features()
    layer = advbn.AdvBN(group_size=4)
    assert layer.init(jax.random.key(0), f) == {}  # init creates no perturbation
    np.testing.assert_array_equal(layer.apply({}, f), f)
    ones = advbn.init_perturbation(layer.apply, {}, f)
    assert ones["s_mu"].shape == (2, 6) and ones["s_sigma"].shape == (2, 6)
    np.testing.assert_allclose(layer.apply({advbn.COLLECTION: ones}, f), f, atol=1e-6)


def test_statistics_and_formula_per_group_equal_a_hand_computation():
    f = np.asarray(_features())
    k1, k2 = jax.random.split(jax.random.key(1))
    s_mu = np.asarray(jax.random.uniform(k1, (2, 6), minval=-0.1, maxval=2.1))
    s_sigma = np.asarray(jax.random.uniform(k2, (2, 6), minval=-0.1, maxval=2.1))
    layer = advbn.AdvBN(group_size=4, clamp=True)
    out, inter = layer.apply({advbn.COLLECTION: {"s_mu": s_mu, "s_sigma": s_sigma}}, f, mutable=["intermediates"])
    want = np.empty_like(f)
    for g in range(2):
        part = f[4 * g:4 * g + 4].astype(np.float64)
        mu = part.reshape(-1, 6).mean(0)
        std = np.sqrt(part.reshape(-1, 6).var(0, ddof=1) + 1e-5)
        np.testing.assert_allclose(inter["intermediates"]["mean"][0][g], mu, rtol=1e-5)
        np.testing.assert_allclose(inter["intermediates"]["std"][0][g], std, rtol=1e-5)
        want[4 * g:4 * g + 4] = np.maximum((part - mu) * s_sigma[g] + mu * s_mu[g], 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    no_clamp = advbn.perturb_features(f, s_mu, s_sigma, group_size=4, clamp=False)
    assert float(jnp.min(no_clamp)) < 0  # factors below 0 flip the sign without the clamp


def test_group_size_must_divide_the_batch_and_perturbation_must_fit():
    f = _features()
    with pytest.raises(ValueError, match="divide the batch"):
        advbn.AdvBN(group_size=3).apply({}, f, mutable=[advbn.COLLECTION])
    pert = advbn.init_perturbation(advbn.AdvBN(group_size=4).apply, {}, f)
    with pytest.raises(ValueError, match="does not fit"):
        advbn.AdvBN(group_size=2).apply({advbn.COLLECTION: pert}, f)


class ForeignNet(nn.Module):
    """A network that is not ours: plain flax Conv/Dense, with an AdvBN layer in the middle."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = advbn.AdvBN(group_size=4, name="advbn_layer")(x)
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def test_attack_on_a_foreign_network_raises_the_loss_and_stays_in_the_box():
    net = ForeignNet()
    x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
    y = jnp.arange(8) % 3
    variables = jit_init(lambda k: net.init(k, x))(jax.random.key(1))
    assert advbn.COLLECTION not in variables
    pert0 = advbn.init_perturbation(net.apply, variables, x)
    assert pert0["advbn_layer"]["s_mu"].shape == (2, 8)

    def loss(pert):
        return jnp.mean(cross_entropy(net.apply({**variables, advbn.COLLECTION: pert}, x), y))

    pert = feature_stats.maximize(loss, pert0, steps=6, step_size=0.2, eps=1.1)
    assert float(loss(pert)) > float(loss(pert0)) + 0.05
    for leaf in jax.tree.leaves(pert):
        assert float(leaf.min()) >= -0.1 - 1e-6 and float(leaf.max()) <= 2.1 + 1e-6
    # every step is one sign step from the previous point, projected: values on the 0.2 grid around 1 or at a bound
    grid = np.round((np.asarray(pert["advbn_layer"]["s_mu"]) - 1) / 0.2, 4)
    assert np.all(np.isclose(grid, np.round(grid)) | np.isclose(np.abs(grid), 5.5))


def test_groups_are_attacked_independently():
    """Statistics and factors per group reproduce per-device attacks: attacking the batch of 8 in groups of
    4 gives the factors of attacking each half alone (the head sees examples independently in eval mode)."""
    net = ForeignNet()
    x = jax.random.uniform(jax.random.key(3), (8, 8, 8, 3))
    y = jnp.arange(8) % 3
    variables = jit_init(lambda k: net.init(k, x))(jax.random.key(1))

    def attack(xs, ys):
        loss = lambda p: jnp.mean(cross_entropy(net.apply({**variables, advbn.COLLECTION: p}, xs), ys))
        return feature_stats.maximize(loss, advbn.init_perturbation(net.apply, variables, xs))

    whole = attack(x, y)["advbn_layer"]["s_mu"]
    halves = [attack(x[:4], y[:4])["advbn_layer"]["s_mu"], attack(x[4:], y[4:])["advbn_layer"]["s_mu"]]
    np.testing.assert_allclose(whole, np.concatenate(halves), atol=1e-6)


def test_sign_steps_projection_and_zero_gradients():
    pert = {"s": jnp.ones(5)}
    w = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
    # a linear loss: every step moves each factor by 0.2 along sign(w) until the box [-0.1, 2.1] stops it;
    # the zero-gradient coordinate does not move (sign(0) = 0)
    out = feature_stats.maximize(lambda p: jnp.sum(w * p["s"]), pert, steps=7, step_size=0.2, eps=1.1)
    np.testing.assert_allclose(out["s"], [2.1, -0.1, 2.1, 1.0, 2.1], atol=1e-6)
    out = feature_stats.maximize(lambda p: jnp.sum(w * p["s"]), pert, steps=2, step_size=0.2, eps=1.1)
    np.testing.assert_allclose(out["s"], [1.4, 0.6, 1.4, 1.0, 1.4], atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        feature_stats.maximize(lambda p: jnp.sum(p["s"]), pert, steps=1.5)


def _method(cut=1, group_size=4, steps=3):
    cfg = common.base().method
    cfg.name = "advbn"
    cfg.advbn.update(cut=cut, group_size=group_size, steps=steps)
    model = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,), dual_bn=True)
    return model, cfg


def _batch(n=8):
    x = jax.random.uniform(jax.random.key(5), (n, 16, 16, 1))
    return {"image": x, "label": jnp.arange(n) % 10}


def _distinct_bn_sets(variables):
    """Gives the adv BN sets their own statistics so that the two branches differ."""
    def bump(path, v):
        names = [str(getattr(p, "key", p)) for p in path]
        return v * 1.5 + 0.1 if "adv" in names else v
    return jax.tree_util.tree_map_with_path(bump, variables)


def test_method_needs_a_dual_bn_staged_model():
    _, cfg = _method()
    with pytest.raises(ValueError, match="dual_bn=True"):
        methods.get(cfg, models.get("small_cnn", num_classes=10), 10)
    cfg.advbn.cut = 3
    with pytest.raises(ValueError, match="cut must be in"):
        methods.get(cfg, models.get("small_cnn", num_classes=10, dual_bn=True), 10)


def test_step_trains_the_head_only_and_keeps_separate_bn_statistics():
    model, cfg = _method()
    method = methods.get(cfg, model, 10)
    batch = _batch()
    variables = _distinct_bn_sets(jit_init(lambda k: model.init(k, batch["image"], train=False))(jax.random.key(0)))
    params, model_state = variables["params"], {"batch_stats": variables["batch_stats"]}
    (loss, (new_state, metrics)), grads = jax.value_and_grad(method.loss, has_aux=True)(
        params, model_state, batch, jax.random.key(1), 0)

    for name in ("conv0", "layer1"):  # the front gets no gradient and keeps its running statistics
        assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads[name]))
        jax.tree.map(np.testing.assert_array_equal, new_state["batch_stats"][name], model_state["batch_stats"][name])
    assert float(jnp.abs(grads["layer2"]["conv"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["layer2"]["bn"]["adv"]["scale"]).max()) > 0
    assert float(jnp.abs(grads["layer2"]["bn"]["clean"]["scale"]).max()) > 0

    # each BN set's running statistics are those of its own head pass alone
    f = method.features(params, model_state, batch["image"])
    f_adv, pert = method.adversarial_features(params, model_state, f, batch["label"])
    _, clean_only = method.head(params, model_state, f, train=True, bn="clean")
    _, adv_only = method.head(params, model_state, f_adv, train=True, bn="adv")
    bs = new_state["batch_stats"]["layer2"]["bn"]
    jax.tree.map(np.testing.assert_allclose, bs["clean"], clean_only["batch_stats"]["layer2"]["bn"]["clean"])
    jax.tree.map(np.testing.assert_allclose, bs["adv"], adv_only["batch_stats"]["layer2"]["bn"]["adv"])
    assert not np.allclose(bs["clean"]["mean"], bs["adv"]["mean"])

    # the loss is the sum of the two heads' cross-entropies on the attacked and clean features
    adv_logits = method.head(params, model_state, f_adv, train=True, bn="adv")[0]
    clean_logits = method.head(params, model_state, f, train=True, bn="clean")[0]
    want = jnp.mean(cross_entropy(adv_logits, batch["label"])) + jnp.mean(cross_entropy(clean_logits, batch["label"]))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert pert["s_mu"].shape == (2, 64)  # two groups of 4, 64 channels after layer1
    # the attack (eval mode, adv BN) raises the adv head's eval-mode loss
    def eval_loss(ff):
        return float(jnp.mean(cross_entropy(method.head(params, model_state, ff, train=False, bn="adv")[0],
                                            batch["label"])))
    assert eval_loss(f_adv) > eval_loss(method.layer.apply({}, f))


def test_trainable_mask_freezes_the_front_in_the_optimiser():
    model, cfg = _method()
    batch = _batch()
    variables = jit_init(lambda k: model.init(k, batch["image"], train=False))(jax.random.key(0))
    mask = methods.trainable_mask(cfg, model, variables, (16, 16, 1))
    assert not any(jax.tree.leaves(mask["conv0"])) and not any(jax.tree.leaves(mask["layer1"]))
    assert all(jax.tree.leaves(mask["layer2"])) and all(jax.tree.leaves(mask["fc"]))
    ocfg = common.base().optim
    ocfg.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=False))
    tx = optim.make_optimizer(ocfg, 0.1, variables["params"], trainable=mask)
    state = state_lib.create(variables, tx, ema=False)
    step = jax.jit(state_lib.make_train_step(methods.get(cfg, model, 10), tx))
    new, _ = step(state, batch, jax.random.key(0))
    for name in ("conv0", "layer1"):  # neither the gradient step nor weight decay moves the front
        jax.tree.map(np.testing.assert_array_equal, new.params[name], state.params[name])
    assert not np.allclose(new.params["fc"]["kernel"], state.params["fc"]["kernel"])
    with pytest.raises(ValueError, match="no parameter"):
        optim.make_optimizer(ocfg, 0.1, variables["params"], trainable=jax.tree.map(lambda _: False, mask))


def test_single_bn_variables_expand_into_both_sets(tmp_path):
    x = jnp.zeros((1, 16, 16, 1))
    single = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,)).init(jax.random.key(0), x, train=False)
    dual_model = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,), dual_bn=True)
    template = jax.eval_shape(lambda: dual_model.init(jax.random.key(1), x, train=False))
    assert dual_bn.is_dual(template) and not dual_bn.is_dual(single)
    path = str(tmp_path / "single.msgpack")
    variables_io.save_variables(path, single)
    loaded = init_source.load(path, template)
    for s in ("clean", "adv"):
        np.testing.assert_array_equal(loaded["params"]["layer1"]["bn"][s]["scale"], single["params"]["layer1"]["bn"]["scale"])
        np.testing.assert_array_equal(loaded["batch_stats"]["conv0"]["bn"][s]["var"],
                                      single["batch_stats"]["conv0"]["bn"]["var"])
    np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], single["params"]["fc"]["kernel"])
    wrong = models.get("small_cnn", num_classes=7, mean=(0.5,), std=(0.5,)).init(jax.random.key(0), x, train=False)
    variables_io.save_variables(path, wrong)
    with pytest.raises(ValueError, match="shape mismatch"):
        init_source.load(path, template)


def test_init_from_reads_a_training_workdir(tmp_path):
    config = common.base()
    config.data.update(name="fake:16x16x1:10", num_classes=10)
    config.train.update(batch_size=8, num_steps=1)
    from robust_jax import parallel
    mesh = parallel.make_mesh()
    run = builders.build_run(config, mesh)
    from robust_jax.checkpoint import Checkpoints
    ck = Checkpoints(str(tmp_path))
    ck.save(run.state, force=True)
    ck.close()
    config.model.kwargs = ml_collections.ConfigDict(dict(dual_bn=True))
    config.model.init_from = str(tmp_path)
    dual = builders.build_run(config, mesh)
    np.testing.assert_array_equal(dual.state.params["layer2"]["bn"]["adv"]["bias"],
                                  run.state.params["layer2"]["bn"]["bias"])
    with pytest.raises(FileNotFoundError, match="without checkpoints"):
        init_source.load(str(tmp_path / "checkpoints"), dual.state.params)


def test_evaluation_uses_the_configured_bn_set_and_reports_it():
    model, _ = _method()
    config = common.base()
    config.data.update(name="fake:16x16x1:10", num_classes=10)
    config.eval.update(batch_size=8, num_examples=16)
    x = jnp.zeros((1, 16, 16, 1))
    variables = _distinct_bn_sets(jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(0)))
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(  # adv statistics far off: different predictions
        lambda p, v: v + 3.0 if "adv" in [str(getattr(k, "key", k)) for k in p] else v, variables["batch_stats"])
    from robust_jax import parallel
    mesh = parallel.make_mesh()
    config.eval.shift_sets = ml_collections.ConfigDict(dict(same=dict(source="fake:16x16x1:10", bn="adv")))
    out = runner.run_suite_detailed(model, variables, config, mesh, suite="clean,shift_sets", progress=False)
    assert out["bn_branch"] == {"clean": "clean", "shift:same": "adv"}
    logits_clean = model.apply(variables, x + 0.3, train=False, bn="clean")
    logits_adv = bn_branch.view(model, "adv").apply(variables, x + 0.3, train=False)
    np.testing.assert_allclose(logits_adv, model.apply(variables, x + 0.3, train=False, bn="adv"))
    assert not np.allclose(logits_clean, logits_adv)
    config.eval.bn = "adv"
    out_adv = runner.run_suite_detailed(model, variables, config, mesh, suite="clean", progress=False)
    assert out_adv["bn_branch"] == {"clean": "adv"}
    with pytest.raises(ValueError, match="dual BatchNorm"):
        runner.run_suite_detailed(models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,)), variables, config, mesh, suite="clean",
                                  progress=False)


def test_feature_pictures_from_a_saved_workdir(tmp_path, capsys):
    from configs import digits_advbn
    from robust_jax.tools import advbn_features
    from saved_runs import save_initial_state

    save_initial_state(digits_advbn.get_config("smoke"), str(tmp_path))
    out = str(tmp_path / "pictures.png")
    rc = advbn_features.main(["--config", "configs/digits_advbn.py:smoke", "--workdir", str(tmp_path), "--num", "8",
                              "--output", out, "--eps", "0.3"])
    assert rc == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "at a bound" in capsys.readouterr().out
    assert advbn_features.main(["--config", "configs/digits_dat.py:smoke", "--workdir", str(tmp_path)]) == 2
