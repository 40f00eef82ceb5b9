"""End-to-end training: files written, resume equals an uninterrupted run, non-finite guard,
PGD-AT buys robustness over standard training, config errors, the command line."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from robust_jax import methods, train
from robust_jax.checkpoint import Checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**train_fields):
    c = default.get_config("smoke")
    c.train.update(**train_fields)
    return c


def _final_params(workdir, config):
    from robust_jax import builders, parallel

    run = builders.build_run(config, parallel.make_mesh())
    ckpts = Checkpoints(workdir)
    state = ckpts.restore(run.state)
    ckpts.close()
    return jax.device_get(state.params), int(state.step)


def test_train_writes_everything(tmp_path):
    report = train.train_and_evaluate(smoke_config(), str(tmp_path))
    assert set(report["accuracy"]) == {"clean", "pgd-3"}
    for name in ("report.json", "report.md", "config.json", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    assert os.listdir(tmp_path / "tensorboard")
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines if "loss" in l] == [2, 4]
    assert np.isfinite(lines[0]["loss"]) and "lr" in lines[0]
    assert Checkpoints(str(tmp_path)).latest_step() == 4


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    config = smoke_config(num_steps=6, checkpoint_every=3, log_every=3)
    config.eval.suite = "clean"
    train.train_and_evaluate(config, str(tmp_path / "a"))

    real_batches = train.data.train_batches

    def interrupted(*args, **kwargs):  # dies after 4 steps, i.e. after the checkpoint at 3
        for i, b in enumerate(real_batches(*args, **kwargs)):
            if i == 4:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(train.data, "train_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, str(tmp_path / "b"))
    assert Checkpoints(str(tmp_path / "b")).latest_step() == 3
    monkeypatch.setattr(train.data, "train_batches", real_batches)
    train.train_and_evaluate(config, str(tmp_path / "b"))

    params_a, step_a = _final_params(str(tmp_path / "a"), config)
    params_b, step_b = _final_params(str(tmp_path / "b"), config)
    assert step_a == step_b == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class NaNAfterTwoSteps(methods.Standard):
    def loss(self, params, model_state, batch, key, step):
        loss, aux = super().loss(params, model_state, batch, key, step)
        return jax.numpy.where(step >= 2, jax.numpy.nan, loss), aux


def test_nonfinite_loss_stops_with_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "standard", NaNAfterTwoSteps)
    config = smoke_config(num_steps=4, log_every=4)
    config.method.name = "standard"
    with pytest.raises(train.NonFiniteError, match="step 3"):
        train.train_and_evaluate(config, str(tmp_path))


def test_unknown_names_fail_loudly(tmp_path):
    for section, field, value, match in [("model", "name", "resnet17", "unknown model"),
                                         ("method", "name", "pgd_att", "unknown method"),
                                         ("data", "name", "no_such_dataset_xyz", "unknown dataset")]:
        config = smoke_config()
        setattr(config[section], field, value)
        with pytest.raises(ValueError, match=match):
            train.train_and_evaluate(config, str(tmp_path / value))
    with pytest.raises(AttributeError):
        smoke_config().train.batchsize = 3  # locked config: a typo is an error


def test_eval_needs_the_same_model_but_not_the_same_optimiser(tmp_path):
    from robust_jax import evaluate

    config = smoke_config(num_steps=1)
    config.eval.suite = "clean"
    train.train_and_evaluate(config, str(tmp_path))
    other_optimiser = smoke_config()
    other_optimiser.optim.name = "adamw"  # evaluation needs the weights only
    other_optimiser.eval.update(suite="clean", curve_eps=())
    assert evaluate.evaluate(other_optimiser, str(tmp_path))["accuracy"]["clean"] >= 0.0
    other = smoke_config()
    other.model.update(name="resnet18")
    with pytest.raises(ValueError, match=r"\(params\) does not match the model:\n  missing key bn1/bias(.|\n)*unexpected key conv0/bn/bias"):
        evaluate.evaluate(other, str(tmp_path))


def _run_main(*args, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # a user's default console
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _console_lines(stderr: str):
    """The non-empty lines of stderr, each frame of a progress bar (redrawn after a carriage return) one line."""
    return [line for line in stderr.splitlines() if line.strip()]


def test_command_line_train_then_eval_and_errors(tmp_path):
    workdir = str(tmp_path / "run")
    cfg = os.path.join(ROOT, "configs", "default.py") + ":smoke"
    r = _run_main(f"--config={cfg}", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith('{"final"') and len(r.stdout.strip().splitlines()) == 1, r.stdout
    # Quiet by default: the progress bars and nothing else (no orbax/absl INFO lines, no TF banner).
    lines = _console_lines(r.stderr)
    assert lines and all(line.startswith(("train:", "final eval:")) for line in lines), lines
    r = _run_main(f"--config={cfg}", f"--workdir={workdir}", "--mode=eval")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.load(open(os.path.join(workdir, "report.json")))
    assert [p[0] for p in report["curve"]["points"]] == [0.0, 0.15]
    assert os.path.exists(os.path.join(workdir, "accuracy_vs_eps.png"))
    # (unknown fields and other command-line mistakes: tests/test_faults.py; eval without weights: the same file)
    r = _run_main(f"--config={cfg[:-1]}", f"--workdir={tmp_path / 'typo'}")  # ':smok'
    assert r.returncode != 0 and "unknown config argument(s) 'smok'; known: smoke, standard" in r.stderr
    assert not os.path.exists(tmp_path / "typo")


@pytest.mark.slow
def test_pgd_at_is_far_more_robust_than_standard_training(tmp_path, package_codegen):
    """A short version of configs/default.py: same eps, fewer steps. Standard training ends with ~0%
    PGD accuracy; PGD-AT keeps a large fraction while staying accurate."""
    results = {}
    for variant in ("", "standard"):
        c = default.get_config(variant)
        c.train.update(epochs=0, num_steps=240, eval_every=0, log_every=40)
        c.method.attack.steps = 5
        c.method.attack.step_size = 0.06
        c.eval.update(suite="clean,pgd-10", curve_eps=())
        results[variant or "pgd_at"] = train.train_and_evaluate(c, str(tmp_path / (variant or "at")))["accuracy"]
    at, st = results["pgd_at"], results["standard"]
    assert at["clean"] >= 0.8 and st["clean"] >= 0.9, results
    assert st["pgd-10"] <= 0.03, results  # PGD drives an undefended model to ~0%
    assert at["pgd-10"] - st["pgd-10"] >= 0.35, results
