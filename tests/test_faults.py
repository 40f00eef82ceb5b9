"""Nothing silently wrong: bad configs, datasets and library inputs fail before any work with an error that
names the field, file or argument; a workdir is not resumed with another config unless asked; the command line
reports these mistakes as one paragraph with exit status 2."""
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import default
from robust_jax import attacks, checks, config_checks, methods, run_config, train, trainers
from robust_jax.attacks.auto_pgd import apgd
from robust_jax.attacks.autoattack import AutoAttack
from robust_jax.attacks.fab_attack import fab
from robust_jax.attacks.square_attack import square
from robust_jax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke(**train_fields):
    c = default.get_config("smoke")
    c.train.update(**train_fields)
    return c


def problems_of(config, mode="train", device_count=None):
    """The fields `config_checks.validate` objects to ([] when it accepts the config)."""
    try:
        config_checks.validate(config, mode, device_count=device_count)
    except config_checks.ConfigError as e:
        return [p.field for p in e.problems]
    return []


# ------------------------------------------------------------------------------------------ config values

def test_negative_eval_eps_fails_before_the_workdir_exists(tmp_path):
    c = smoke()
    c.eval.eps = -0.1
    with pytest.raises(config_checks.ConfigError, match=r"config\.eval\.eps=-0\.1 is not allowed \(allowed: > 0"):
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="eval.eps"):  # a ValueError, for callers that catch those
        trainers.evaluate(c, str(tmp_path / "run"))


@pytest.mark.parametrize("field,value", [
    ("method.attack.eps", -0.1), ("method.attack.eps", 1.5), ("method.attack.step_size", 0.0),
    ("method.attack.steps", 0), ("eval.eps", 2.0), ("eval.step_size", -1.0), ("eval.autoattack.eps", -0.5),
    ("eval.suite", "clean,pgd"), ("eval.suite", "clean,pdg-20"), ("train.log_every", 0),
    ("data.num_classes", 1)])
def test_each_bad_field_is_named(field, value):
    c = smoke()
    section, _, name = field.rpartition(".")
    block = c
    for part in section.split("."):
        block = block[part]
    block[name] = value
    assert problems_of(c) == [field]


def test_validation_reads_only_what_the_run_uses():
    assert problems_of(smoke()) == []
    c = default.get_config("smoke,standard")
    c.method.attack.eps = -1.0  # standard training runs no attack
    assert problems_of(c) == []
    c = smoke()
    c.method.attack.update(norm="l2", eps=3.0)  # an L2 budget may exceed 1
    c.eval.curve_eps = (0.0, 0.1)  # 0 on the curve is the clean point
    assert problems_of(c) == []
    c.eval.curve_eps = (0.1, -0.1)
    assert problems_of(c) == ["eval.curve_eps[1]"]


def test_a_run_of_zero_steps_is_refused():
    c = smoke(num_steps=0, epochs=0)
    with pytest.raises(config_checks.ConfigError, match=r"train\.num_steps=0 .*train\.epochs > 0"):
        config_checks.validate(c, "train")
    assert problems_of(c, mode="eval") == []  # evaluating a trained workdir needs no steps
    with pytest.raises(config_checks.ConfigError, match="rounds to 0 steps"):
        config_checks.check_run_length(0, smoke(num_steps=0, epochs=0.001))


def test_batches_must_split_over_the_devices():
    c = smoke()
    c.train.batch_size, c.eval.batch_size = 9, 8
    assert problems_of(c, device_count=2) == ["train.batch_size"]
    assert problems_of(c, device_count=1) == []


# ----------------------------------------------------------------------------------------------- datasets

def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def images(n):
    return np.zeros((n, 4, 4, 1), np.uint8)


def test_one_class_image_folder_is_refused(tmp_path):
    for split in ("train", "test"):
        os.makedirs(tmp_path / "folder" / split / "cat")
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(tmp_path / "folder" / split / "cat" / f"{i}.png")
    c = smoke()
    c.data.update(name=f"imagefolder:{tmp_path / 'folder'}", num_classes=0)
    with pytest.raises(sources.DataError, match=r"imagefolder:.*folder' has 1 class folder\(s\); a classifier "
                                                r"needs at least 2"):
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_labels_out_of_range_are_refused(tmp_path):
    with pytest.raises(sources.DataError, match=r"neg\.npz', split 'train': labels must be class indices .* "
                                                r"\[-1, 1\] \(1 negative\)"):
        sources.get_source(write_npz(tmp_path / "neg.npz", x_train=images(3), y_train=np.array([0, 1, -1])))
    with pytest.raises(sources.DataError, match=r"labels must be integer class indices"):
        sources.get_source(write_npz(tmp_path / "frac.npz", x_train=images(2), y_train=np.array([0.0, 0.5])))
    with pytest.raises(sources.DataError, match=r"class indices in \[0, 10\), got values in \[0, 12\]"):
        sources.ArraySource("arrays", {"train": (images(2), np.array([0, 12]))}, num_classes=10)
    # num_classes inferred (data.num_classes=0): a test label the training labels do not reach is refused ...
    name = write_npz(tmp_path / "extra.npz", x_train=images(4), y_train=np.array([0, 1, 2, 0]),
                     x_test=images(2), y_test=np.array([1, 3]))
    c = smoke()
    c.data.update(name=name, num_classes=0)
    with pytest.raises(sources.DataError, match=r"split 'test' has labels up to 3, but the training split 'train' "
                                                r"only has labels in \[0, 3\)"):
        config_checks.check_data(c)
    c.data.num_classes = 4  # ... unless the number of classes is given
    config_checks.check_data(c)


def test_npz_arrays_of_different_lengths_are_refused(tmp_path):
    name = write_npz(tmp_path / "short.npz", x_train=images(5), y_train=np.arange(4) % 2)
    with pytest.raises(sources.DataError, match=r"short\.npz': x_train has 5 images but y_train has 4 labels"):
        sources.get_source(name)


# ------------------------------------------------------------------------------------------ library inputs

def linear_model(num_classes=10):
    w = jax.random.normal(jax.random.key(0), (16, num_classes))
    return lambda x: x.reshape(x.shape[0], -1) @ w


X = jax.random.uniform(jax.random.key(1), (4, 4, 4, 1))


def test_bad_labels_fail_loudly_instead_of_changing_the_attack():
    """A [B, 1] column would broadcast into a different loss, and a label >= K gives a NaN loss and no
    perturbation: both raise, eagerly, naming the shape or range; soft targets only where the loss takes them."""
    f = lambda x: x.reshape(x.shape[0], -1) @ jnp.ones((12, 3))  # a linear model with 3 classes
    x = jnp.full((2, 2, 2, 3), 0.5)
    run = lambda y, **kw: attacks.pgd(f, x, y, None, eps=0.1, step_size=0.1, steps=1, random_start=False, **kw)
    with pytest.raises(ValueError, match=r"shape \[2\].*got shape \(2, 1\).*y\[:, 0\]"):
        run(jnp.zeros((2, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"in \[0, 3\).*got values in \[0, 12\]"):
        run(jnp.array([0, 12]))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        run(jnp.array([-1, 0]))
    with pytest.raises(ValueError, match="integer class indices"):
        run(jnp.array([0.0, 1.0]))
    soft = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])
    assert run(soft).shape == x.shape  # soft targets (mixup) for the CE loss
    with pytest.raises(ValueError, match="class distributions"):
        run(2 * soft)
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        run(soft, loss="margin")  # the margin loss needs class indices


def test_autoattack_checks_label_shape_and_range_before_attacking():
    logits = linear_model()
    aa = AutoAttack(lambda v, x: logits(x), norm="Linf", eps=0.1, version="custom", attacks=["apgd-ce"],
                    log=None, progress=False, checks=False)
    with pytest.raises(ValueError, match=r"shape \[4\], got shape \(4, 1\) \(flatten a \[B, 1\] column"):
        aa.run({}, X, np.zeros((4, 1), np.int32))
    with pytest.raises(ValueError, match=r"y must be class indices in \[0, 10\) .* got values in \[0, 12\]"):
        aa.run({}, X, np.array([0, 1, 12, 3]))


@pytest.mark.parametrize("attack", [
    lambda f, y: apgd(f, X, y, jax.random.key(0), norm="linf", eps=0.1, steps=2),
    lambda f, y: fab(f, X, y, jax.random.key(0), norm="linf", eps=0.1, steps=2),
    lambda f, y: square(f, X, y, jax.random.key(0), norm="linf", eps=0.1, queries=2)], ids=["apgd", "fab", "square"])
def test_attack_entry_points_check_the_label_range(attack):
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        attack(linear_model(), jnp.array([0, 1, 12, 3]))


def test_traced_checks_switch_catches_values_under_jit():
    logits = linear_model()
    bad = X.at[0, 0, 0, 0].set(1.5)
    pgd = jax.jit(lambda x, y: attacks.pgd(logits, x, y, jax.random.key(0), eps=0.1, step_size=0.05, steps=1))
    pgd(bad, jnp.array([0, 1, 2, 3])).block_until_ready()  # off by default: traced values are not read
    previous = checks.enable_traced_checks()
    try:
        assert checks.traced_checks_enabled()
        jitted = jax.jit(lambda x, y: attacks.pgd(logits, x, y, jax.random.key(0), eps=0.1, step_size=0.05, steps=1))
        with pytest.raises(Exception, match=r"x must lie in \[0,1\], got values in \[.*, 1\.5\]"):
            jitted(bad, jnp.array([0, 1, 2, 3])).block_until_ready()
        with pytest.raises(Exception, match=r"y must be class indices in \[0, 10\)"):
            jitted(X, jnp.array([0, 1, 12, 3])).block_until_ready()
        jitted(X, jnp.array([0, 1, 2, 3])).block_until_ready()  # valid inputs pass
        # the methods' losses check their batch the same way
        apply_fn = lambda variables, x, train, **hooks: logits(x)  # noqa: E731
        loss = jax.jit(lambda b: methods.standard_loss(apply_fn, {}, {}, b, jax.random.key(0))[0])
        with pytest.raises(Exception, match=r"batch\['image'\] must lie in \[0,1\]"):
            loss({"image": bad, "label": jnp.array([0, 1, 2, 3])}).block_until_ready()
    finally:
        checks.enable_traced_checks(previous)
    env = dict(os.environ, ROBUST_JAX_CHECKS="1")
    out = subprocess.run([sys.executable, "-c", "from robust_jax import checks; print(checks.traced_checks_enabled())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


# --------------------------------------------------------------------------------------- resuming a workdir

def test_resume_with_another_config_is_refused_with_a_diff_unless_allowed(tmp_path):
    workdir = str(tmp_path / "run")
    first = default.get_config("smoke,standard")
    first.train.num_steps = 1
    first.eval.update(suite="clean", curve_eps=())
    run_config.save_config(first, workdir)
    changed = first.copy_and_resolve_references()
    changed.optim.lr, changed.method.attack.eps = 0.05, 0.1
    with pytest.raises(run_config.ConfigChangedError) as e:
        train.train_and_evaluate(changed, workdir)
    assert "method.attack.eps: 0.15 -> 0.1" in str(e.value) and "optim.lr: 0.2 -> 0.05" in str(e.value)
    assert "--allow_config_change" in str(e.value)
    assert sorted(os.listdir(workdir)) == ["config.json"]  # refused before any checkpoint or metric
    # the run's length may grow without asking; the record keeps both configs
    longer = first.copy_and_resolve_references()
    longer.train.num_steps = 2
    assert run_config.save_config(longer, workdir) == [("train.num_steps", 1, 2)]
    assert run_config.config_history(workdir) == [os.path.join(workdir, "config.1.json")]
    # accepted when asked: trains with the new values, and the previous config stays on record
    changed.train.num_steps = 2
    trainers.train_and_evaluate(changed, workdir, allow_config_change=True)
    saved = [json.load(open(p)) for p in run_config.config_history(workdir) + [os.path.join(workdir, "config.json")]]
    assert [(s["train"]["num_steps"], s["optim"]["lr"], s["method"]["attack"]["eps"]) for s in saved] == \
        [(1, 0.2, 0.15), (2, 0.2, 0.15), (2, 0.05, 0.1)]


# ------------------------------------------------------------------------------------------ non-finite guard

def test_a_nan_in_a_batch_stops_training_with_the_step(tmp_path, monkeypatch):
    real = train.data.train_batches

    def poisoned(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 1:
                batch = {**batch, "image": batch["image"].at[0, 0, 0, 0].set(jnp.nan)}
            yield batch

    monkeypatch.setattr(train.data, "train_batches", poisoned)
    c = default.get_config("smoke,standard")
    c.train.update(num_steps=2, log_every=2)
    with pytest.raises(train.NonFiniteError, match="step 2"):
        train.train_and_evaluate(c, str(tmp_path))


# ---------------------------------------------------------------------------------------------- command line

def run_main(*args, cwd=ROOT):
    t0 = time.time()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    return r, time.time() - t0


def assert_one_paragraph(r, *expected):
    """Exit status 2 and one short paragraph on stderr (no traceback) containing each of `expected`."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) <= 6, r.stderr
    for text in expected:
        assert text in r.stderr, (text, r.stderr)


def test_command_line_errors_are_one_paragraph(tmp_path):
    cfg = "configs/default.py:smoke"
    r, seconds = run_main("--config=configs/no_such_config.py:smoke", f"--workdir={tmp_path / 'a'}")
    assert_one_paragraph(r, "config file not found: 'configs/no_such_config.py'")
    assert seconds < 5.0, seconds  # before the config's imports (those of jax and TensorFlow take longer)

    r, _ = run_main(f"--config={cfg}", f"--workdir={tmp_path / 'b'}", "--config.train.batchsize=3")
    assert_one_paragraph(r, "unknown config field config.train.batchsize",
                         'Did you mean "batch_size" instead of "batchsize"?')

    r, _ = run_main(f"--config={cfg}", f"--workdir={tmp_path / 'c'}", "--config.method.attack.eps=-0.1")
    assert_one_paragraph(r, "config.method.attack.eps=-0.1 is not allowed", "--config.method.attack.eps=")
    assert not (tmp_path / "c").exists()

    workdir = tmp_path / "d"
    run_config.save_config(default.get_config("smoke"), str(workdir))
    r, _ = run_main(f"--config={cfg}", f"--workdir={workdir}", "--config.method.attack.eps=0.1", "--verbosity=1")
    assert r.returncode == 2 and "Traceback" in r.stderr  # --verbosity=1 adds the traceback ...
    assert r.stderr.index("Traceback") < r.stderr.index("\nerror: ")  # ... before the same paragraph
    assert "method.attack.eps: 0.15 -> 0.1" in r.stderr and "--allow_config_change" in r.stderr


def test_evaluation_without_weights_fails_before_the_model_is_built(tmp_path, monkeypatch):
    from robust_jax import evaluate

    def build_run(*args):
        raise AssertionError("the model was built although there is nothing to evaluate")

    monkeypatch.setattr(evaluate.builders, "build_run", build_run)
    config = default.get_config("smoke")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty/checkpoints and no eval.checkpoint set"):
        evaluate.evaluate(config, str(tmp_path / "empty"))
    config.eval.checkpoint = str(tmp_path / "missing.msgpack")
    with pytest.raises(FileNotFoundError, match=r"no variables file at .*missing.msgpack"):
        evaluate.evaluate(config, str(tmp_path / "empty"))


def test_the_command_line_describes_the_non_finite_guard_in_one_paragraph():
    from robust_jax import cli_errors as main

    error = train.NonFiniteError("step 3: the loss or a gradient is NaN/inf (the update was skipped)")
    assert main.describe(error) == str(error)
    assert main.describe(RuntimeError("a bug")) is None  # anything unexpected keeps its traceback ...
    try:
        {}["key"]
    except KeyError as e:
        assert main.describe(e, ["main.py", "--config.train.key=1"]) is None  # ... a failing lookup included


def test_the_command_line_ends_a_saved_ctrl_c_with_its_message_and_status_130(capsys, monkeypatch):
    """Ctrl-C during training saves the step (robust_jax.loop); the command line then prints where, without a
    traceback, and exits 130 as shells report a SIGINT. A KeyboardInterrupt outside training stays as it is."""
    from robust_jax import cli_errors, loop

    monkeypatch.setattr(sys, "argv", ["main.py"])

    def interrupted():
        raise loop.TrainingInterrupted("training stopped by SIGINT after step 4: the state is saved in /w/4; ...")

    with pytest.raises(SystemExit) as exited:
        cli_errors.run(interrupted)
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip().startswith("training stopped by SIGINT after step 4")

    def plain():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli_errors.run(plain)
