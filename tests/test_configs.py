"""Every recipe config builds, is locked, and its `smoke` variant's train step traces; the smoke variants of all
but the largest recipes train and evaluate end to end (those run with `-m heavy`)."""
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import pytest

from robust_jax import data, parallel, trainers
from robust_jax import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


def load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_is_locked_and_documented(name):
    c = load(name)
    assert c.is_locked
    module = importlib.import_module(f"configs.{name}")
    doc = module.__doc__ or ""
    assert "python main.py --config configs/" in doc, "docstring must give the command"
    assert "%" in doc, "docstring must state the expected/published numbers"


# Method variants chosen by a recipe argument. The CIFAR AMP configs build their variants with the same
# `configs.digits_amp.amp_variant`, so digits covers them; cifar10_vit_at:trades covers the ViT recipes' TRADES path
# with ARD + PRM. Their train steps are traced in the default run; their end-to-end smoke runs are `heavy` (the
# recipe's own smoke run covers the trainer and evaluation, tests/test_amp.py and tests/test_vit_at.py each loss).
VARIANTS = [("digits_amp", "lambda"), ("digits_amp", "geometric"), ("digits_amp", "mixed_point"),
            ("digits_amp", "mixup"), ("cifar10_vit_at", "trades")]

# Smoke runs that compile the largest programs (minutes of the suite on 2 CPU cores) and whose method, trainer and
# evaluation a smaller recipe's smoke run covers: imagenet_pgd_at_resnet50 (cifar10_pgd_at), imagenet_advbn_resnet50
# (digits_advbn), imagenet_dat_* (digits_dat), imagenet_vit_at and cifar10_subset_vit (cifar10_vit_at), vqgan_cifar10
# (vqgan_digits), cifar10_amp (digits_amp, cifar10_subset_amp), cifar10_mixacm (digits_mixacm); and the smoke runs
# another file runs anyway: vqgan_digits (tests/test_vqgan_training.py trains and resumes it, with these checks) and
# cifar10_eval_converted_resnet18 (standard training of a ResNet-18: cifar10_pgd_at's run covers the trainer and
# evaluation, tests/test_convert.py the ResNet-18 in training and evaluation). In the default run their train step
# is traced with the recipe's own model, method and optimiser (test_smoke_train_step_traces).
HEAVY_SMOKE = ("imagenet_pgd_at_resnet50", "imagenet_advbn_resnet50", "imagenet_dat_resnet50", "imagenet_dat_vit_b16",
               "imagenet_vit_at", "cifar10_subset_vit", "vqgan_cifar10", "cifar10_amp", "cifar10_mixacm",
               "vqgan_digits", "cifar10_eval_converted_resnet18")


def _smoke_param(name):
    return pytest.param(name, marks=pytest.mark.heavy) if name in HEAVY_SMOKE else name


@pytest.mark.parametrize("name,arg", [(r, "smoke") for r in RECIPES] + [(r, f"{a},smoke") for r, a in VARIANTS])
def test_smoke_train_step_traces(name, arg):
    """The recipe's model, method, optimiser and train step fit together: one step traced (no compile) on a batch
    of the smoke data's shape gives a state of the same structure, shapes and dtypes, and finite-check metrics."""
    config = load(name, arg)
    run, loss_owner = trainers.build(config, parallel.make_mesh())
    state = run.state
    step = state_lib.make_train_step(loss_owner, run.tx, ema_decay=config.optim.ema_decay)
    b = config.train.batch_size
    batch = {"image": jax.ShapeDtypeStruct((b, *data.example_shape(config.data)), jnp.float32),
             "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
    new, metrics = jax.eval_shape(step, state, batch, jax.random.key(0), loss_owner.frozen)
    spec = lambda t: jax.tree.map(lambda a: (a.shape, a.dtype), t)  # noqa: E731
    assert jax.tree.structure(new) == jax.tree.structure(state) and spec(new) == spec(state)
    assert metrics["nonfinite"].shape == () and "grad_norm" in metrics


@pytest.mark.parametrize("name", [_smoke_param(r) for r in RECIPES if r != "default"])
def test_smoke_variant_trains(name, tmp_path):
    config = load(name, "smoke")
    report = trainers.train_and_evaluate(config, str(tmp_path))
    if config.method.name == "vqgan":  # VQGAN training runs report reconstruction quality
        assert 0.0 < report["metrics"]["code_usage"] <= 1.0 and report["metrics"]["psnr"] > 0
        assert os.path.isfile(tmp_path / "vqgan.msgpack")
        return
    assert set(report["accuracy"]) == {"clean", "pgd-2"}
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values())


@pytest.mark.heavy
@pytest.mark.parametrize("name,arg", VARIANTS)
def test_smoke_of_each_method_variant_trains(name, arg, tmp_path):
    config = load(name, f"{arg},smoke")
    report = trainers.train_and_evaluate(config, str(tmp_path))
    assert set(report["accuracy"]) == {"clean", "pgd-2"}
