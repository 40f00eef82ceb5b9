"""MixACM (methods/mixacm.py, methods/acm.py, models/teacher_io.py) on tiny models: the frozen teacher, the shared
mixed batch, the ACM distances against hand computations, the reduction to standard training, the projections
(trained, not exported), teachers of other architectures and teacher loading with its errors."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from robust_jax import methods, mixing, models
from robust_jax import state as state_lib
from robust_jax.checkpoint import Checkpoints
from robust_jax.methods import acm as acm_lib
from robust_jax.methods import mixacm as mixacm_lib
from robust_jax.models import init_source, teacher_io, variables_io

B, K, SHAPE = 4, 5, (8, 8, 1)
MIX = mixing.BatchMixing(num_classes=K, mixup_alpha=1.0)


def small_cnn(widths):
    return models.get("small_cnn", num_classes=K, mean=(0.5,), std=(0.5,), widths=widths)


def init(model, seed=0):
    x = jnp.zeros((1,) + SHAPE)
    v = model.init(jax.random.key(seed), x, train=False)
    # non-trivial running statistics: eval mode and train mode differ
    return {**v, "batch_stats": jax.tree.map(lambda a: 1.3 * a + 0.1, v["batch_stats"])}


@pytest.fixture(scope="module")
def nets():
    """A student (widths 4, 8, 8) and a wider teacher (8, 8, 16): pairs 0 and 2 need projections."""
    student, teacher = small_cnn((4, 8, 8)), small_cnn((8, 8, 16))
    sv, tv = init(student, 0), init(teacher, 1)
    batch = {"image": jax.random.uniform(jax.random.key(2), (B,) + SHAPE), "label": jnp.arange(B) % K}
    proj = mixacm_lib.init_projections(jax.random.key(3), student.apply, sv, teacher.apply, tv, batch["image"])
    params = {**sv["params"], state_lib.METHOD_PARAMS: proj}
    return student, teacher, params, {"batch_stats": sv["batch_stats"]}, tv, batch


def loss(nets, params=None, teacher_variables=None, teacher_apply=None, key=jax.random.key(4), **settings):
    student, teacher, p, state, tv, batch = nets
    settings.setdefault("mixing", MIX)
    return mixacm_lib.mixacm_loss(student.apply, p if params is None else params, state, batch, key,
                                  teacher_apply=teacher_apply or teacher.apply,
                                  teacher_variables=tv if teacher_variables is None else teacher_variables, **settings)


# ------------------------------------------------------------------------------------------ ACM distances
def test_channel_acm_distance_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 2, 2, 5))  # spatial sizes may differ
    want = []
    for i in range(2):
        qa = np.maximum(a[i], 0).mean(axis=(0, 1))
        qb = np.maximum(b[i], 0).mean(axis=(0, 1))
        want.append(np.sum((qa / np.linalg.norm(qa) - qb / np.linalg.norm(qb)) ** 2))
    np.testing.assert_allclose(acm_lib.acm_distance(jnp.asarray(a), jnp.asarray(b), "channel"), want, rtol=1e-5)


def test_spatial_acm_distance_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    want = []
    for i in range(2):
        per_channel = []
        for c in range(5):
            ma, mb = np.maximum(a[i, :, :, c], 0).ravel(), np.maximum(b[i, :, :, c], 0).ravel()
            per_channel.append(np.sum((ma / max(np.linalg.norm(ma), 1e-8) - mb / max(np.linalg.norm(mb), 1e-8)) ** 2))
        want.append(np.mean(per_channel))
    np.testing.assert_allclose(acm_lib.acm_distance(jnp.asarray(a), jnp.asarray(b), "spatial"), want, rtol=1e-5)
    with pytest.raises(ValueError, match="equal size"):
        acm_lib.acm_distance(jnp.asarray(a), jnp.asarray(b[:, :2]), "spatial")


# ------------------------------------------------------------------------------------------ the teacher
def test_teacher_gets_no_gradient_and_no_state_update(nets):
    calls = []

    def spy(variables, x, **kw):
        calls.append((kw.get("train"), tuple(kw.get("mutable", ()))))
        return nets[1].apply(variables, x, **kw)

    grads = jax.grad(lambda tv: loss(nets, teacher_variables=tv, teacher_apply=spy)[0])(nets[4])
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))
    assert calls == [(False, ("intermediates",))], calls  # eval mode; only the taps are mutable

    # a train step of the adapter: the frozen teacher is an argument, and the state holds the student's only
    method = mixacm_lib.MixACM(nets[0], _cfg(), K, teacher=(nets[1], nets[4]))
    st = state_lib.create({"params": nets[2], **nets[3]}, optax.sgd(0.1), ema=False)
    new, metrics = jax.jit(state_lib.make_train_step(method, optax.sgd(0.1)))(st, nets[5], jax.random.key(0),
                                                                             method.frozen)
    assert int(metrics["nonfinite"]) == 0 and set(new.model_state) == {"batch_stats"}
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), method.frozen["teacher"], nets[4])
    assert all(jax.tree.leaves(chex_equal))


def test_the_same_mixed_batch_reaches_both_networks(nets):
    seen = {}

    def recorder(name, apply_fn):
        def fn(variables, x, **kw):
            seen[name] = x
            return apply_fn(variables, x, **kw)
        fn.__self__ = apply_fn.__self__  # keeps the staged tap order
        return fn

    student, teacher, params, state, tv, batch = nets
    mixacm_lib.mixacm_loss(recorder("student", student.apply), params, state, batch, jax.random.key(4),
                           teacher_apply=recorder("teacher", teacher.apply), teacher_variables=tv, mixing=MIX)
    np.testing.assert_array_equal(seen["student"], seen["teacher"])
    assert float(jnp.max(jnp.abs(seen["student"] - batch["image"]))) > 1e-3, "the batch must be mixed"


# ------------------------------------------------------------------------------------------ reductions
@pytest.mark.parametrize("mix", [None, MIX])
def test_zero_weights_reduce_to_standard_training(nets, mix):
    """No KD/ACM term: the loss and gradient of `standard_loss` with the same mixing (none: alpha 0)."""
    student, _, params, state, _, batch = nets
    model_params = state_lib.split_params(params)[0]
    key = jax.random.key(7)
    f = lambda p: loss(nets, params=p, key=key, mixing=mix, kd_weight=0.0, acm_weight=0.0)[0]
    g = lambda p: methods.standard_loss(student.apply, p, state, batch, key, mixing=mix)[0]
    np.testing.assert_allclose(f(model_params), g(model_params), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(jax.grad(f)(model_params)), jax.tree.leaves(jax.grad(g)(model_params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_kd_term_is_temperature_scaled_kl(nets):
    s, t = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.2, 1.5, 3.0]])
    ps, pt = jax.nn.softmax(s / 3.0), jax.nn.softmax(t / 3.0)
    np.testing.assert_allclose(mixacm_lib.kd_loss(s, t, 3.0), 9.0 * jnp.sum(pt * jnp.log(pt / ps), -1), rtol=1e-5)


# ------------------------------------------------------------------------------------------ projections
def test_projections_are_trained_and_left_out_of_the_exported_student(nets, tmp_path):
    student, _, params, state, _, _ = nets
    proj = params[state_lib.METHOD_PARAMS]
    assert sorted(proj) == ["projection0", "projection2"]  # widths 4 -> 8 and 8 -> 16; pair 1 is 8 -> 8
    assert proj["projection0"]["kernel"].shape == (4, 8) and proj["projection2"]["kernel"].shape == (8, 16)
    grads = jax.grad(lambda p: loss(nets, params=p)[0])(params)[state_lib.METHOD_PARAMS]
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))

    method = mixacm_lib.MixACM(student, _cfg(), K, teacher=(nets[1], nets[4]))
    st = state_lib.create({"params": params, **state}, optax.sgd(0.1), ema=True)
    new, _ = jax.jit(state_lib.make_train_step(method, optax.sgd(0.1), ema_decay=0.9))(
        st, nets[5], jax.random.key(0), method.frozen)
    moved = new.params[state_lib.METHOD_PARAMS]["projection0"]["kernel"] - proj["projection0"]["kernel"]
    assert float(jnp.max(jnp.abs(moved))) > 0
    exported = new.eval_variables()
    assert state_lib.METHOD_PARAMS not in exported["params"]
    variables_io.check_same_structure(exported, init(student), what="exported student")
    ckpts = Checkpoints(str(tmp_path))  # another run's init_from / a teacher reads the student alone
    ckpts.save(new)
    ckpts.close()
    assert state_lib.METHOD_PARAMS not in init_source.read(str(tmp_path))["params"]


def test_width_mismatch_without_projection_names_the_widths(nets):
    student, teacher, _, _, tv, batch = nets
    with pytest.raises(ValueError, match="student has 4 channels, the teacher 8"):
        mixacm_lib.init_projections(jax.random.key(0), student.apply, init(student), teacher.apply, tv,
                                    batch["image"], projection=False)
    with pytest.raises(ValueError, match="holds no 'projection0'"):
        loss(nets, params=state_lib.split_params(nets[2])[0])
    with pytest.raises(ValueError, match="block 5 does not exist in the student, which has 3"):
        loss(nets, blocks=(5,), teacher_blocks=(0,))


def test_teacher_and_student_of_different_architectures_run():
    """ResNet / PreAct-ResNet / WRN / small CNN taps, different depths and widths, paired by negative index."""
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    batch = {"image": x, "label": jnp.array([0, 1])}
    kw = dict(num_classes=K, mean=(0.5,) * 3, std=(0.5,) * 3)
    pairs = [(models.get("resnet18", stage_sizes=(1, 1), width=4, **kw),
              models.get("wrn", depth=10, widen_factor=1, **kw)),
             (models.get("small_cnn", widths=(4, 8), **kw),
              models.get("preact_resnet18", stage_sizes=(1, 1, 1), width=4, **kw))]
    for student, teacher in pairs:
        sv, tv = student.init(jax.random.key(1), x, train=False), teacher.init(jax.random.key(2), x, train=False)
        proj = mixacm_lib.init_projections(jax.random.key(3), student.apply, sv, teacher.apply, tv, x, blocks=(-2, -1))
        assert proj, "the widths differ: projections are needed"
        params = {**sv["params"], state_lib.METHOD_PARAMS: proj}
        value, (_, m) = mixacm_lib.mixacm_loss(student.apply, params, {"batch_stats": sv["batch_stats"]}, batch,
                                               jax.random.key(4), teacher_apply=teacher.apply, teacher_variables=tv,
                                               mixing=MIX, blocks=(-2, -1))
        assert np.isfinite(float(value)) and float(m["acm_loss"]) > 0 and float(m["kd_loss"]) > 0


# ------------------------------------------------------------------------------------------ teacher loading
def _cfg(checkpoint="", name="", kwargs=None, **mixacm):
    cfg = ml_collections.ConfigDict(dict(name="mixacm", **methods.config_defaults()))
    cfg.mixup_alpha = 1.0
    cfg.mixacm.teacher.update(checkpoint=checkpoint, name=name, kwargs=kwargs or {})
    cfg.mixacm.update(mixacm)
    return cfg


def test_teacher_from_a_workdir_or_a_variables_file(nets, tmp_path):
    tv = nets[4]
    workdir = tmp_path / "teacher"
    st = state_lib.create(tv, optax.sgd(0.1), ema=False)
    ckpts = Checkpoints(str(workdir))
    ckpts.save(st)
    ckpts.close()
    model_block = dict(name="small_cnn", mean=[0.5], std=[0.5], kwargs=dict(widths=[8, 8, 16]))
    (workdir / "config.json").write_text(json.dumps({"model": model_block}))
    method = methods.get(_cfg(str(workdir)), nets[0], K)
    assert method.teacher.widths == (8, 8, 16)
    for a, b in zip(jax.tree.leaves(method.frozen["teacher"]), jax.tree.leaves(tv)):
        np.testing.assert_array_equal(a, b)
    # the projections the run adds come from the teacher's architecture alone
    proj = methods.init_params(_cfg(str(workdir)), nets[0], init(nets[0]), SHAPE, K, jax.random.key(0))
    assert sorted(proj) == ["projection0", "projection2"]

    path = str(tmp_path / "teacher.msgpack")
    variables_io.save_variables(path, tv)
    m, v = teacher_io.load(path, K, "small_cnn", dict(mean=(0.5,), std=(0.5,), widths=(8, 8, 16)), image_shape=SHAPE)
    assert m.widths == (8, 8, 16) and jax.tree.structure(v) == jax.tree.structure(tv)
    wrong = dict(mean=(0.5,), std=(0.5,), widths=(4, 8, 16))
    with pytest.raises(ValueError, match=r"kernel: \(3, 3, 1, 8\) != expected \(3, 3, 1, 4\)"):
        teacher_io.load(path, K, "small_cnn", wrong, image_shape=SHAPE)
    method = methods.get(_cfg(path, "small_cnn", dict(mean=(0.5,), std=(0.5,), widths=(4, 8, 16))), nets[0], K)
    with pytest.raises(ValueError, match="MixACM teacher's variables .* does not match"):
        method.loss(nets[2], nets[3], nets[5], jax.random.key(0), 0, method.frozen)
    with pytest.raises(ValueError, match="give its architecture"):
        teacher_io.load(path, K)
    with pytest.raises(ValueError, match="no teacher given"):
        methods.get(_cfg(""), nets[0], K)


# ------------------------------------------------------------------------------------------ a short real run
@pytest.mark.heavy
def test_digits_mixacm_student_is_more_robust_than_a_standard_student(tmp_path):
    """configs/default.py's PGD-AT teacher and configs/digits_mixacm.py's students on a short budget (10 epochs
    each, under 2 min on 2 CPU cores): MixACM's student beats the standard-trained one on PGD-20 at eps 0.15
    (measured: 27.2% vs 0.0%)."""
    from configs import default, digits_mixacm
    from robust_jax import trainers

    def short(c, **train):
        with c.unlocked():
            c.train.update(epochs=10, eval_every=0, **train)
            c.eval.update(suite="clean,pgd-20", curve_eps=())
        return c

    teacher = str(tmp_path / "teacher")
    report = trainers.train_and_evaluate(short(default.get_config()), teacher)
    assert report["accuracy"]["pgd-20"] > 0.4, report["accuracy"]
    robust = {}
    for arg in ("standard", None):
        c = short(digits_mixacm.get_config(arg))
        c.method.mixacm.teacher.checkpoint = teacher
        robust[arg or "mixacm"] = trainers.train_and_evaluate(c, str(tmp_path / str(arg)))["accuracy"]["pgd-20"]
    print("PGD-20 at eps 0.15, 10 epochs:", robust)
    assert robust["mixacm"] > robust["standard"] + 0.1, robust
