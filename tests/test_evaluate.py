"""Evaluation engine: suite parsing, mCE formulas, per-chunk resumable evaluation (an interrupted run
resumes and gives the same report), corruptions, AutoAttack and shift-set integration, reports and plots."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from robust_jax import builders, evaluate, parallel
from robust_jax import data as data_lib
from robust_jax.evaluation import (attack_eval, autoattack_eval, chunks, corruption_eval, mce, report,
                                   runner, shift_sets, tasks)
from robust_jax.models import variables_io


# --- suite -----------------------------------------------------------------------------------------------
def test_parse_suite_entries_and_errors():
    entries = evaluate.parse_suite("clean, pgd-20,cw-5,autoattack,corruptions,corrupted_tfds,shift_sets")
    assert [(e.name, e.kind, e.steps) for e in entries] == [
        ("clean", "clean", 0), ("pgd-20", "pgd", 20), ("cw-5", "cw", 5), ("autoattack", "autoattack", 0),
        ("corruptions", "corruptions", 0), ("corrupted_tfds", "corrupted_tfds", 0), ("shift_sets", "shift_sets", 0)]
    assert [e.is_attack for e in entries] == [True, True, True, False, False, False, False]
    for bad, match in [("pgd", "number of steps"), ("autoattak", "unknown evaluator"), ("clean-3", "no step count"),
                       ("clean,clean", "twice"), (" , ", "names no evaluator")]:
        with pytest.raises(ValueError, match=match):
            evaluate.parse_suite(bad)


def test_task_registry_defines_the_entries_and_the_order():
    """The suite's entry kinds come from the task registry; each task runs once, the attack entries first
    (corrupted_tfds reads their clean accuracy), the others in suite order."""
    assert list(tasks.TASK_OF) == ["clean", "fgsm", "pgd", "cw", "autoattack", "corruptions", "corrupted_tfds",
                                   "shift_sets"]
    assert tasks.STEPPED == ("pgd", "cw") and all(callable(m.run) for m in tasks.TASKS.values())
    entries = evaluate.parse_suite("shift_sets,corrupted_tfds,pgd-3,autoattack,clean")
    assert [e.task for e in entries] == ["shift_sets", "corrupted_tfds", "attacks", "autoattack", "attacks"]
    assert tasks.plan(entries) == ["attacks", "shift_sets", "corrupted_tfds", "autoattack"]


# --- mCE ---------------------------------------------------------------------------------------------------
def test_corruption_metrics_by_hand():
    errors = {"gaussian_noise": {"1": 0.2, "2": 0.4, "3": 0.6}, "fog": {"1": 0.1, "2": 0.3, "3": 0.5},
              "spatter": {"1": 0.9, "2": 0.9, "3": 0.9}}
    m = mce.summarise(errors, 0.1, alexnet=True)
    assert m["corruption_error"] == pytest.approx({"gaussian_noise": 0.4, "fog": 0.3, "spatter": 0.9})
    assert m["mean_corruption_error"] == pytest.approx((0.4 + 0.3 + 0.9) / 3)
    assert m["mean_corruption_accuracy"] == pytest.approx(1 - (0.4 + 0.3 + 0.9) / 3)
    assert m["mean_corruption_error_benchmark"] == pytest.approx(0.35)  # spatter is not a benchmark corruption
    assert m["ce"] == pytest.approx({"gaussian_noise": 0.4 / 0.886428, "fog": 0.3 / 0.819324})
    assert m["relative_ce"] == pytest.approx({"gaussian_noise": (0.4 - 0.1) / (0.886428 - 0.43478),
                                              "fog": (0.3 - 0.1) / (0.819324 - 0.43478)})
    assert m["mce"] is None and m["relative_mce"] is None  # needs all 15
    assert "ce" not in mce.summarise(errors, 0.1, alexnet=False)
    no_clean = mce.summarise(errors, None, alexnet=True)  # clean error not measured: no relative CE
    assert no_clean["relative_ce"] == {"gaussian_noise": None, "fog": None} and no_clean["ce"] == m["ce"]
    # all 15 at AlexNet's own errors -> mCE = relative mCE = 1 (100%)
    alex = {c: {str(s): e for s in range(1, 6)} for c, e in mce.ALEXNET_ERRORS.items()}
    full = mce.summarise(alex, mce.ALEXNET_CLEAN_ERROR, alexnet=True)
    assert full["mce"] == pytest.approx(1.0) and full["relative_mce"] == pytest.approx(1.0)
    half = mce.summarise({c: {"1": e / 2} for c, e in mce.ALEXNET_ERRORS.items()}, 0.0, alexnet=True)
    assert half["mce"] == pytest.approx(0.5)
    assert half["relative_mce"] == pytest.approx(np.mean([e / 2 / (e - 0.43478) for e in mce.ALEXNET_ERRORS.values()]))


def test_corruption_settings_errors():
    c = default.get_config("smoke")
    assert corruption_eval.settings(c.eval)["names"][0] == "gaussian_noise"
    assert len(corruption_eval.parse_names("all")) == 19 and corruption_eval.parse_names("fog, snow") == ("fog", "snow")
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption_eval.parse_names("fogg")
    c = default.get_config("smoke")
    c.eval.corruptions.severities = (0, 6)
    with pytest.raises(ValueError, match="severities"):
        corruption_eval.settings(c.eval)


# --- chunks ------------------------------------------------------------------------------------------------
def test_run_chunks_saves_atomically_and_skips_finished_chunks(tmp_path):
    batches = [{"v": np.full(4, i)} for i in range(5)]
    calls = []

    def compute(chunk, first, bs):
        calls.append((chunk, first, len(bs)))
        if chunk == 1 and len(calls) == 2 and fail["on"]:
            raise KeyboardInterrupt
        return {"n": 4 * len(bs), "sum": {"v": int(sum(b["v"].sum() for b in bs))}}

    fail = {"on": True}
    store = chunks.ChunkStore(str(tmp_path), "task", {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        chunks.run_chunks(iter(batches), 5, batches_per_chunk=2, store=store, compute=compute, desc="t", progress=False)
    assert calls == [(0, 0, 2), (1, 2, 2)] and sorted(store.finished()) == [0]
    assert not [f for f in os.listdir(store.directory) if ".tmp" in f]
    fail["on"], calls[:] = False, []
    total = chunks.run_chunks(iter(batches), 5, batches_per_chunk=2, store=store, compute=compute, desc="t",
                              progress=False)
    assert calls == [(1, 2, 2), (2, 4, 1)]  # chunk 0 was read back, not recomputed
    assert total == {"n": 20, "sum": {"v": 4 * (0 + 1 + 2 + 3 + 4)}}
    assert json.load(open(os.path.join(store.directory, "meta.json")))["identity"] == {"a": 1}
    assert chunks.ChunkStore(str(tmp_path), "task", {"a": 2}).directory != store.directory  # other settings
    with pytest.raises(ValueError, match="differ in keys"):
        chunks.add({"a": 1}, {"b": 1})


# --- end to end: resumable evaluate() -------------------------------------------------------------------------
def _config(variables_path, **eval_fields):
    c = default.get_config("smoke")
    fields = dict(checkpoint=variables_path, batch_size=8, num_examples=32, suite="clean,pgd-2", curve_eps=(),
                  num_example_images=4)
    c.eval.update({**fields, **eval_fields})
    return c


@pytest.fixture(scope="module")
def variables_path(tmp_path_factory):
    """Random small-CNN variables of the default (digits) smoke config, as a variables file."""
    c = default.get_config("smoke")
    run = builders.build_run(c, parallel.make_mesh())
    path = str(tmp_path_factory.mktemp("vars") / "small_cnn.msgpack")
    variables_io.save_variables(path, jax.device_get(run.state.eval_variables(use_ema=False)))
    return path


def _without_paths(rep):
    return {k: v for k, v in rep.items() if k != "variables"}


def test_interrupted_evaluation_resumes_to_the_same_report(tmp_path, monkeypatch, variables_path):
    config = _config(variables_path, chunk_size=16)  # 32 examples = 2 chunks of 2 batches
    full = evaluate.evaluate(config, str(tmp_path / "a"))
    real = attack_eval.compute_fn
    computed = []

    def dies_after_one_chunk(*args, **kwargs):
        compute = real(*args, **kwargs)

        def wrapped(chunk, first, batches):
            if computed:
                raise KeyboardInterrupt
            computed.append(chunk)
            return compute(chunk, first, batches)
        return wrapped

    monkeypatch.setattr(attack_eval, "compute_fn", dies_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate(config, str(tmp_path / "b"))
    (task,) = os.listdir(tmp_path / "b" / "eval")
    assert sorted(os.listdir(tmp_path / "b" / "eval" / task)) == ["chunk_00000.json", "examples.npz", "meta.json"]
    assert not (tmp_path / "b" / "report.json").exists()

    def counting(*args, **kwargs):
        compute = real(*args, **kwargs)

        def wrapped(chunk, first, batches):
            computed.append(chunk)
            return compute(chunk, first, batches)
        return wrapped

    computed.clear()
    monkeypatch.setattr(attack_eval, "compute_fn", counting)
    resumed = evaluate.evaluate(config, str(tmp_path / "b"))
    assert computed == [1]  # only the unfinished chunk ran
    assert resumed == full
    assert json.load(open(tmp_path / "b" / "report.json")) == json.load(open(tmp_path / "a" / "report.json"))
    assert open(tmp_path / "b" / "report.md").read() == open(tmp_path / "a" / "report.md").read()
    assert full["data"]["preprocess"] == "none" and full["data"]["image_size"] == 16
    assert os.path.getsize(tmp_path / "a" / "examples.png") < 150_000

    # other settings (eps) never reuse these chunks; resume=False writes none
    computed.clear()
    other = _config(variables_path, chunk_size=16, eps=0.05)
    evaluate.evaluate(other, str(tmp_path / "b"))
    assert computed == [0, 1] and len(os.listdir(tmp_path / "b" / "eval")) == 2
    computed.clear()
    no_resume = _config(variables_path, chunk_size=16, resume=False)
    assert evaluate.evaluate(no_resume, str(tmp_path / "c"))["accuracy"] == full["accuracy"]
    assert computed == [0, 1] and not (tmp_path / "c" / "eval").exists()


def test_chunk_size_must_be_a_multiple_of_the_batch():
    c = default.get_config("smoke")
    c.eval.update(batch_size=8, chunk_size=12)
    with pytest.raises(ValueError, match="multiple of"):
        runner.batches_per_chunk(c.eval)


# --- corruptions -------------------------------------------------------------------------------------------
def _model_and_variables(config, variables_path):
    run = builders.build_run(config, parallel.make_mesh())
    variables = variables_io.load_variables(variables_path, jax.eval_shape(lambda: run.state.eval_variables(False)))
    return run, variables


def _predict(run, variables, x):
    return np.asarray(jnp.argmax(run.model.apply(variables, jnp.asarray(x), train=False), -1))


def test_corruption_task_counts_and_report(tmp_path, monkeypatch, variables_path):
    """Engine check with two stand-in corruptions of known effect: identity ('brightness' here) must give
    the clean error at every severity, black images ('fog' here) the error of the all-black prediction."""
    from robust_jax import corruptions

    monkeypatch.setitem(corruptions._FUNCTIONS, "brightness", lambda key, img, sev: img)
    monkeypatch.setitem(corruptions._FUNCTIONS, "fog", lambda key, img, sev: jnp.zeros_like(img) * sev)
    config = _config(variables_path, suite="clean,corruptions")
    config.eval.corruptions.update(names="brightness,fog", severities=(1, 3), quantize=False)
    run, variables = _model_and_variables(config, variables_path)
    rep = evaluate.evaluate(config, str(tmp_path))
    sec = rep["corruptions"]
    src = data_lib.source_for(config.data).split("test")
    x = np.stack([np.asarray(e["image"]) for e in src.dataset.take(32)])
    y = np.array([int(e["label"]) for e in src.dataset.take(32)])
    clean_err = 1 - np.mean(_predict(run, variables, x) == y)
    black_err = 1 - np.mean(_predict(run, variables, np.zeros_like(x)) == y)
    assert sec["errors"]["brightness"] == pytest.approx({"1": clean_err, "3": clean_err})
    assert sec["errors"]["fog"] == pytest.approx({"1": black_err, "3": black_err})
    assert sec["metrics"]["clean_error"] == pytest.approx(clean_err)
    assert rep["accuracy"]["clean"] == pytest.approx(1 - clean_err)
    assert rep["accuracy"]["corruptions"] == pytest.approx(1 - (clean_err + black_err) / 2)
    assert "mce" not in sec["metrics"]  # 10 classes: no AlexNet normalisation
    md = open(tmp_path / "report.md").read()
    assert "corruption_errors.png" in md and "| fog |" in md
    assert os.path.getsize(tmp_path / "corruption_errors.png") < 150_000
    ex = np.load(os.path.join(rep_dir(tmp_path, "corruptions"), "examples.npz"))
    assert set(ex.files) == {"labels", "clean:images", "clean:pred", "brightness-3:images", "brightness-3:pred",
                             "fog-3:images", "fog-3:pred"}
    assert np.all(ex["fog-3:images"] == 0)


def rep_dir(workdir, task):
    (d,) = [d for d in os.listdir(os.path.join(workdir, "eval")) if d.startswith(task + "-")]
    return os.path.join(workdir, "eval", d)


def test_unimplemented_corruption_fails_before_any_work(monkeypatch):
    from robust_jax import corruptions

    for name in ("fog", "snow"):
        monkeypatch.delitem(corruptions._FUNCTIONS, name, raising=False)
    with pytest.raises(NotImplementedError, match="fog, snow"):
        corruption_eval.check_implemented(("fog", "snow"))


def _implemented():
    from robust_jax import corruptions

    return [n for n in corruptions.ALL if n in corruptions._FUNCTIONS]


def _check_real_corruptions(names, variables_path):
    config = _config(variables_path)
    run, variables = _model_and_variables(config, variables_path)
    s = {"names": tuple(names), "severities": (5,), "seed": 0, "quantize": True}
    store = chunks.MemoryStore()
    compute = corruption_eval.compute_fn(run.model, variables, s, examples_store=store, num_examples=4,
                                         progress=False)
    batches, nb = data_lib.eval_batches(config.data, "test", global_batch_size=8, mesh=parallel.make_mesh(),
                                        num_examples=8)
    total = compute(0, 0, list(batches))
    ex = store.load_arrays("examples")
    for name in names:
        assert total["n"] == 8 and 0 <= total["correct"][name]["5"] <= 8
        imgs = ex[f"{name}-5:images"]
        assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.shape == (4, 16, 16, 1), name
        assert np.abs(imgs - ex["clean:images"]).max() > 0.01, name


def test_a_real_corruption_runs_in_the_engine(variables_path):
    """The first implemented corruption through the engine (grey digits): valid images, changed from clean."""
    if not _implemented():
        pytest.skip("no corruption implemented yet")
    _check_real_corruptions(_implemented()[:1], variables_path)


@pytest.mark.slow
@pytest.mark.heavy  # a minute (every corruption compiled): the test above runs the engine's path with one of them,
def test_every_implemented_corruption_runs_in_the_engine(variables_path):  # tests/test_corruptions_* check each one
    if not _implemented():
        pytest.skip("no corruption implemented yet")
    _check_real_corruptions(_implemented(), variables_path)


def test_corrupted_tfds_missing_names_the_build_command(tmp_path):
    c = default.get_config("smoke")
    c.data.update(data_dir=str(tmp_path))
    c.eval.corruptions.update(names="fog", severities=(1, 2), tfds_builder="cifar10_corrupted")
    with pytest.raises(FileNotFoundError, match=r"tfds build cifar10_corrupted/fog_1 --data_dir=.*\n.*fog_2"):
        corruption_eval.tfds_datasets(c, corruption_eval.settings(c.eval))
    c.eval.corruptions.tfds_builder = ""
    with pytest.raises(ValueError, match="no corrupted TFDS builder known for data.name='digits'"):
        corruption_eval.tfds_datasets(c, corruption_eval.settings(c.eval))


# --- AutoAttack integration ----------------------------------------------------------------------------------
def test_autoattack_entry_chunks_equal_one_direct_run(tmp_path, monkeypatch, variables_path):
    """The entry runs AutoAttack chunk by chunk; with a deterministic attack (FGSM as a custom ensemble, to
    stay fast) the summed chunks equal one direct run on all points."""
    from robust_jax.attacks import fgsm
    from robust_jax.attacks.autoattack import AutoAttack

    eps = 0.1
    custom = lambda logits_fn, x, y, key: fgsm(logits_fn, x, y, norm="linf", eps=eps)

    def make_attack(model, s, *, mesh=None, progress=True):
        assert s == {"version": "standard", "norm": "linf", "eps": eps, "seed": 3, "batch_size": 8}
        return AutoAttack(lambda v, x: model.apply(v, x, train=False), norm=s["norm"], eps=s["eps"],
                          version="custom", attacks=[("fgsm", custom)], seed=s["seed"], batch_size=8, log=None,
                          progress=False, checks=False)

    monkeypatch.setattr(autoattack_eval, "make_attack", make_attack)
    config = _config(variables_path, suite="clean,autoattack", chunk_size=16, eps=eps)
    config.eval.autoattack.update(seed=3, batch_size=8)
    rep = evaluate.evaluate(config, str(tmp_path))
    run, variables = _model_and_variables(config, variables_path)
    src = data_lib.source_for(config.data).split("test")
    x = np.stack([np.asarray(e["image"]) for e in src.dataset.take(32)])
    y = np.array([int(e["label"]) for e in src.dataset.take(32)])
    direct = make_attack(run.model, autoattack_eval.settings(config.eval)).run(variables, x, y)
    aa = rep["autoattack"]
    assert aa["num_examples"] == 32
    assert aa["clean_accuracy"] == pytest.approx(direct.clean_accuracy) == pytest.approx(rep["accuracy"]["clean"])
    assert aa["robust_accuracy"] == pytest.approx(direct.robust_accuracy) == rep["accuracy"]["autoattack"]
    assert aa["per_attack"] == pytest.approx(direct.per_attack)
    assert aa["data"]["preprocess"] == "none"
    assert "## AutoAttack" in open(tmp_path / "report.md").read()
    ex = np.load(os.path.join(rep_dir(tmp_path, "autoattack"), "examples.npz"))
    assert np.abs(ex["autoattack:images"] - x[:4]).max() <= eps + 1e-6


@pytest.mark.slow
def test_autoattack_standard_entry_end_to_end(tmp_path, variables_path):
    """The real standard ensemble through evaluate(): the four attacks in order, robust accuracy falling
    monotonically from clean, the report section and the adversarial examples inside the eps-ball."""
    pytest.importorskip("robust_jax.attacks.auto_pgd")
    eps = 0.1
    config = _config(variables_path, suite="clean,autoattack", num_examples=16, eps=eps)
    config.eval.autoattack.batch_size = 16
    rep = evaluate.evaluate(config, str(tmp_path))
    aa = rep["autoattack"]
    assert list(aa["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [aa["clean_accuracy"]] + list(aa["per_attack"].values())
    assert all(a >= b for a, b in zip(accs, accs[1:])) and accs[-1] == aa["robust_accuracy"]
    assert aa["clean_accuracy"] == pytest.approx(rep["accuracy"]["clean"])
    ex = np.load(os.path.join(rep_dir(tmp_path, "autoattack"), "examples.npz"))
    assert np.abs(ex["autoattack:images"] - ex["clean:images"]).max() <= eps + 1e-6


def test_autoattack_settings_default_to_the_eval_threat_model():
    c = default.get_config("smoke")
    s = autoattack_eval.settings(c.eval)
    assert (s["norm"], s["eps"], s["version"]) == ("linf", pytest.approx(0.15), "standard")
    c.eval.autoattack.update(norm="l2", eps=0.5, version="fast")
    with pytest.raises(ValueError, match="version"):
        autoattack_eval.settings(c.eval)


# --- shift sets ----------------------------------------------------------------------------------------------
def test_shift_set_specs_and_label_maps():
    spec = shift_sets.parse_spec("r", {"source": "imagefolder:/x", "split": "imagenet-r", "labels": "wnid",
                                       "mask": "present"})
    assert spec == {"source": "imagefolder:/x", "split": "imagenet-r", "labels": "wnid", "mask": "present",
                    "preprocess": None, "image_size": None, "bn": None, "splits": None}
    assert shift_sets.parse_spec("s", "imagenet_sketch")["labels"] == "identity"
    for bad, match in [({"source": "a", "lables": "wnid"}, "unknown key"), ({"split": "x"}, "'source' is required"),
                       ({"source": "a", "labels": "names"}, "labels must be"), ({"source": "a", "mask": "yes"}, "mask")]:
        with pytest.raises(ValueError, match=match):
            shift_sets.parse_spec("x", bad)
    wnids = shift_sets.read_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    np.testing.assert_array_equal(shift_sets.label_map([wnids[7], wnids[3]], "wnid", num_classes=1000, wnids=wnids),
                                  [7, 3])
    np.testing.assert_array_equal(shift_sets.label_map(["0", "1", "10", "2"], "index", num_classes=11), [0, 1, 10, 2])
    with pytest.raises(ValueError, match="not ImageNet wnids"):
        shift_sets.label_map(["n99999999"], "wnid", num_classes=1000, wnids=wnids)
    with pytest.raises(ValueError, match="model has 5 classes"):
        shift_sets.label_map(["0", "7"], "index", num_classes=5)
    mask = shift_sets.class_mask([1, 3], 5)
    logits = np.array([[9.0, 1.0, 0.0, 2.0, 8.0], [0.0, 5.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(shift_sets_pred(logits, mask)), [3, 1])


def shift_sets_pred(logits, mask):
    from robust_jax.evaluation import forward_eval

    return forward_eval.masked_predictions(logits, mask)


def test_imagenet_r_style_folder_is_mapped_and_masked(tmp_path):
    """An ImageFolder of wnid folders (ImageNet-R layout) evaluated by a 1000-class model: labels go to their
    ImageNet indices, the prediction is the argmax over the set's classes only; checked against the same
    computation done by hand on the decoded images."""
    from PIL import Image

    wnids = shift_sets.read_wnids()
    chosen = [wnids[5], wnids[2], wnids[900]]
    rng = np.random.RandomState(0)
    for w in chosen:
        os.makedirs(tmp_path / "sets" / "imagenet-r" / w)
        for i in range(3):
            Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(tmp_path / "sets" / "imagenet-r" / w / f"{i}.png")
    # a second set beside it with another class: the ImageFolder's class list is the union of both, so the
    # mask of imagenet-r must come from its own labels (3 classes), not from the class list (4)
    os.makedirs(tmp_path / "sets" / "imagenet-a" / wnids[10])
    Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(tmp_path / "sets" / "imagenet-a" / wnids[10] / "0.png")
    c = default.get_config("smoke")
    c.data.update(name="fake:16x16x3:1000", num_classes=1000)
    c.model.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    c.eval.update(suite="shift_sets", batch_size=8, num_examples=0, curve_eps=())
    c.eval.shift_sets = {"r": {"source": f"imagefolder:{tmp_path / 'sets'}", "split": "imagenet-r", "labels": "wnid",
                               "mask": "present"},
                         "plain": f"imagefolder:{tmp_path / 'sets'}"}  # no split 'test'
    run = builders.build_run(c, parallel.make_mesh())
    variables = run.state.eval_variables(False)
    with pytest.raises(ValueError, match="no split 'test'"):
        runner.run_suite_detailed(run.model, variables, c, parallel.make_mesh(), suite="shift_sets", progress=False)
    del c.eval.shift_sets["plain"]
    out = runner.run_suite_detailed(run.model, variables, c, parallel.make_mesh(), suite="shift_sets",
                                    progress=False, num_classes=1000)
    r = out["shift_sets"]["r"]
    assert r["num_examples"] == 9 and r["classes"] == 3 and r["image_size"] == 16
    images, labels = [], []
    for w in sorted(chosen):
        for i in range(3):
            images.append(np.asarray(Image.open(tmp_path / "sets" / "imagenet-r" / w / f"{i}.png"), np.float32) / 255)
            labels.append(wnids.index(w))
    logits = np.asarray(run.model.apply(variables, jnp.asarray(np.stack(images)), train=False))
    allowed = sorted(wnids.index(w) for w in chosen)
    pred = np.array(allowed)[np.argmax(logits[:, allowed], -1)]
    assert r["accuracy"] == pytest.approx(np.mean(pred == np.array(labels)))
    assert out["accuracy"]["shift:r"] == r["accuracy"]


def test_shift_set_over_several_splits_reports_their_mean(tmp_path):
    """ImageNet-Instagram's protocol: one folder per filter, the accuracy is the mean over the filters."""
    from PIL import Image

    rng = np.random.RandomState(1)
    sizes = {"filter_a": 3, "filter_b": 5}  # unequal sizes: the mean of accuracies, not over all images
    for split, n in sizes.items():
        for k in ("0", "1"):
            os.makedirs(tmp_path / "insta" / split / k)
            for i in range(n):
                Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(
                    tmp_path / "insta" / split / k / f"{i}.png")
    c = default.get_config("smoke")
    c.data.update(name="fake:16x16x3:10", num_classes=10)
    c.model.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    c.eval.update(suite="shift_sets", batch_size=4, num_examples=0, curve_eps=())
    source = f"imagefolder:{tmp_path / 'insta'}"
    c.eval.shift_sets = {"all": {"source": source, "splits": "*"}, "a": {"source": source, "split": "filter_a"},
                         "b": {"source": source, "splits": "filter_b"}}
    run = builders.build_run(c, parallel.make_mesh())
    variables = run.state.eval_variables(False)
    out = runner.run_suite_detailed(run.model, variables, c, parallel.make_mesh(), suite="shift_sets", progress=False)
    r = out["shift_sets"]
    assert r["all"]["splits"] == {"filter_a": r["a"]["accuracy"], "filter_b": r["b"]["accuracy"]}
    assert r["all"]["accuracy"] == pytest.approx((r["a"]["accuracy"] + r["b"]["accuracy"]) / 2)
    assert r["all"]["num_examples"] == 16 and r["all"]["split"] == "mean of 2"
    c.eval.shift_sets = {"x": {"source": source, "splits": "filter_c"}}
    with pytest.raises(ValueError, match="no split"):
        runner.run_suite_detailed(run.model, variables, c, parallel.make_mesh(), suite="shift_sets", progress=False)
    with pytest.raises(ValueError, match="not both"):
        shift_sets.parse_spec("x", {"source": source, "split": "filter_a", "splits": "*"})


def test_shift_sets_entry_needs_sets():
    c = default.get_config("smoke")
    with pytest.raises(ValueError, match="eval.shift_sets is empty"):
        runner.run_suite_detailed(None, None, c, None, suite="shift_sets", num_classes=10, progress=False)


# --- plots -----------------------------------------------------------------------------------------------------
def test_plots_stay_small_and_check_shapes(tmp_path):
    import io

    from matplotlib.figure import Figure

    from robust_jax import plots

    rng = np.random.RandomState(0)
    names = list(mce.ALEXNET_ERRORS) + ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    path = plots.corruption_heatmap(rng.rand(19, 5), names, [1, 2, 3, 4, 5], str(tmp_path / "h.png"))
    assert 1000 < os.path.getsize(path) < plots.MAX_BYTES
    with pytest.raises(ValueError, match="expected"):
        plots.corruption_heatmap(rng.rand(3, 5), names, [1, 2, 3, 4, 5], str(tmp_path / "bad.png"))
    noisy = Figure(figsize=(6, 6), dpi=100)
    noisy.subplots().imshow(rng.rand(300, 300, 3))
    buf = io.BytesIO()
    noisy.savefig(buf, format="png")
    assert len(buf.getvalue()) > plots.MAX_BYTES  # so the palette / lower-resolution fallback is exercised
    assert os.path.getsize(plots.save(noisy, str(tmp_path / "noisy.png"))) <= plots.MAX_BYTES
    rows = [(f"row{i}", rng.rand(6, 16, 16, 1), rng.randint(0, 3, 6)) for i in range(3)]
    path = plots.examples_grid(rows, np.array([0, 1, 2, 0, 1, 2]), str(tmp_path / "ex.png"))
    assert os.path.getsize(path) < plots.MAX_BYTES
    rows, labels = report.example_rows({"attacks": {"labels": np.arange(2), "clean:images": np.zeros((2, 4, 4, 1)),
                                                    "clean:pred": np.arange(2), "pgd-2:images": np.ones((2, 4, 4, 1)),
                                                    "pgd-2:pred": np.zeros(2)},
                                        "corruptions": {"labels": np.arange(2), "clean:images": np.zeros((2, 4, 4, 1)),
                                                        "clean:pred": np.arange(2), "fog-3:images": np.ones((2, 4, 4, 1)),
                                                        "fog-3:pred": np.zeros(2)}})
    assert [r[0] for r in rows] == ["clean", "pgd-2", "fog-3"]
