"""`train.select_best`: the state the periodic evaluation scored best is kept, survives an interruption, and
is what the final report, `--mode eval` and `model.init_from` of the workdir use. The periodic scores are
scripted (the real evaluation runs for the final report), so which step must win is known."""
import json

import jax
import numpy as np
import pytest

from configs import default
from robust_jax import evaluate, train, trainers
from robust_jax.checkpoint import Checkpoints
from robust_jax.models import init_source


def select_config(**train_fields):
    c = default.get_config("smoke")
    c.train.update(**{**dict(num_steps=6, eval_every=1, eval_suite="clean", eval_examples=64, checkpoint_every=1,
                             keep_checkpoints=10, select_best="clean"), **train_fields})
    c.eval.update(suite="clean", curve_eps=())
    return c


def script_periodic_scores(monkeypatch, scores):
    """The periodic evaluation returns `scores` in call order (an exception instance is raised instead)."""
    calls = iter(scores)

    def scripted(*args, **kwargs):
        score = next(calls)
        if isinstance(score, BaseException):
            raise score
        return {"clean": score}

    monkeypatch.setattr(train.evaluate, "run_suite", scripted)


def params_at(workdir, step, name="checkpoints"):
    ckpts = Checkpoints(str(workdir), name=name)
    raw = ckpts.restore_raw(step)
    ckpts.close()
    return jax.device_get(raw["params"])


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_the_best_periodic_state_is_reported_evaluated_and_inherited(tmp_path, monkeypatch):
    # steps 1..5 in the loop, 6 = the last state; 0.7 at 2 and 4: the tie keeps step 2
    script_periodic_scores(monkeypatch, [0.2, 0.7, 0.5, 0.7, 0.1, 0.3])
    report = train.train_and_evaluate(select_config(), str(tmp_path))
    record = json.load(open(tmp_path / "best_checkpoint.json"))
    assert record == {"metric": "clean", "value": 0.7, "step": 2}
    assert "best_checkpoint (step 2: best periodic clean 70.00%)" in report["variables"]
    best = params_at(tmp_path, 2, name="best_checkpoint")
    assert_same_tree(best, params_at(tmp_path, 2))
    with pytest.raises(AssertionError):  # the last state really differs from the chosen one
        assert_same_tree(best, params_at(tmp_path, 6))
    assert Checkpoints(str(tmp_path), name="best_checkpoint").manager.all_steps() == [2]  # only the best kept

    monkeypatch.undo()  # `--mode eval` scores the same weights as the final report, named the same way
    again = evaluate.evaluate(select_config(), str(tmp_path))
    assert again["accuracy"]["clean"] == report["accuracy"]["clean"]
    assert "best_checkpoint (step 2)" in again["variables"]
    assert_same_tree(init_source.read_workdir(str(tmp_path))["params"], best)


def test_an_interrupted_run_remembers_its_best(tmp_path, monkeypatch):
    # dies in the evaluation at step 4 (after the checkpoint of step 3); resumed, 0.65 at step 5 must not
    # win over the 0.7 of step 2 from before the interruption
    script_periodic_scores(monkeypatch, [0.2, 0.7, 0.5, KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(select_config(), str(tmp_path))
    assert json.load(open(tmp_path / "best_checkpoint.json"))["step"] == 2
    script_periodic_scores(monkeypatch, [0.6, 0.65, 0.3])
    report = train.train_and_evaluate(select_config(), str(tmp_path))
    assert json.load(open(tmp_path / "best_checkpoint.json")) == {"metric": "clean", "value": 0.7, "step": 2}
    assert "(step 2:" in report["variables"]


def test_select_best_errors_are_explained(tmp_path, monkeypatch):
    from configs import vqgan_digits

    vqgan = vqgan_digits.get_config("smoke")
    vqgan.train.select_best = "clean"
    with pytest.raises(ValueError, match="for classifiers; a VQGAN run keeps its last state"):
        trainers.train_and_evaluate(vqgan, str(tmp_path / "vq"))
    with pytest.raises(ValueError, match="set train.eval_every"):
        train.train_and_evaluate(select_config(eval_every=0), str(tmp_path / "a"))
    with pytest.raises(KeyError, match=r"'pgd-3' is not among the periodic evaluation's results \['clean'\]"):
        train.train_and_evaluate(select_config(select_best="pgd-3", num_steps=2), str(tmp_path / "b"))

    script_periodic_scores(monkeypatch, [0.4, 0.5])  # step 1, then the last state (2), which wins
    train.train_and_evaluate(select_config(num_steps=2), str(tmp_path / "c"))
    assert json.load(open(tmp_path / "c" / "best_checkpoint.json"))["step"] == 2
    with pytest.raises(ValueError, match="selects by 'clean', the config by 'pgd-3'"):
        train.train_and_evaluate(select_config(select_best="pgd-3", num_steps=4), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="keeps a best checkpoint"):
        train.train_and_evaluate(select_config(select_best="", num_steps=4), str(tmp_path / "c"))
