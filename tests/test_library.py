"""The library boundaries: robust_jax's pieces import and work without TensorFlow (only the tf.data input
pipeline needs it), and docs/library.md's snippets run as written with jax/flax/optax alone."""
import os
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Modules that are the tf.data pipeline itself; everything else in the package must import without TF.
TF_MODULES = {"robust_jax.data.pipeline", "robust_jax.data.sources", "robust_jax.data.augment",
              "robust_jax.data.randaugment", "robust_jax.data.random_erasing", "robust_jax.data.tf_runtime"}
# What a user with only `pip install jax flax optax` lacks (installed here, made unimportable).
NOT_IN_JAX_FLAX_OPTAX = ("tensorflow", "tensorflow_datasets", "torch", "torchvision", "ml_collections", "tqdm",
                         "sklearn", "matplotlib", "tensorboardX", "PIL")


def _run(code: str, blocked=(), timeout=600):
    """Runs `code` in a fresh interpreter where the `blocked` top-level modules cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout


def _package_modules():
    import robust_jax

    return sorted(m.name for m in pkgutil.walk_packages(robust_jax.__path__, "robust_jax.")
                  if not m.name.endswith("__main__"))


def test_every_module_outside_the_input_pipeline_imports_without_tensorflow():
    modules = [m for m in _package_modules() if m not in TF_MODULES]
    assert "robust_jax.methods.trades" in modules and "robust_jax.corruptions.weather" in modules
    out = _run(f"""
        import importlib
        failed = []
        for name in {modules!r}:
            try:
                importlib.import_module(name)
            except Exception as e:
                failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
        print("FAILED", failed)
        """, blocked=("tensorflow", "tensorflow_datasets"))
    assert "FAILED []" in out, out


def test_the_input_pipeline_is_the_only_place_that_loads_tensorflow():
    """With TF installed, importing the library (data's facade included) loads neither TF nor torch; the
    first use of a pipeline function does load TF, without Keras, and reads the digits without importing
    scikit-learn or tensorflow_datasets (only TFDS and ImageFolder sources need it). A run's metrics writer
    (TensorBoard events through tensorboardX, which would import torch) leaves torch unloaded, and torch still
    imports afterwards."""
    out = _run("""
        import glob, sys, tempfile
        import robust_jax.attacks, robust_jax.models, robust_jax.methods, robust_jax.corruptions
        import robust_jax.data, robust_jax.trainers, robust_jax.train, robust_jax.evaluate
        print("AFTER_IMPORT", "tensorflow" in sys.modules, "torch" in sys.modules)
        from configs import common
        cfg = common.base().data
        robust_jax.data.source_for(cfg)
        print("AFTER_USE", *(m in sys.modules for m in ("tensorflow", "keras", "sklearn", "tensorflow_datasets")))
        from robust_jax.metrics_writer import MetricsWriter
        workdir = tempfile.mkdtemp()
        writer = MetricsWriter(workdir)
        writer.write(1, {"loss": 0.5})
        writer.close()
        print("WRITER", "torch" in sys.modules, len(glob.glob(workdir + "/tensorboard/events.out.tfevents.*")))
        try:
            import torch
            print("TORCH_AFTER", torch.ones(2).sum().item())
        except ImportError:  # the parity extra is not installed
            print("TORCH_AFTER", 2.0)
        """)
    assert "AFTER_IMPORT False False" in out and "AFTER_USE True False False False" in out, out
    assert "WRITER False 1" in out and "TORCH_AFTER 2.0" in out, out


def test_skipped_import_fails_only_inside_and_leaves_loaded_modules_alone(tmp_path, monkeypatch):
    from robust_jax.import_guard import skipped_import

    (tmp_path / "optional_dep.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "optional_dep", raising=False)
    with skipped_import("optional_dep"):
        with pytest.raises(ImportError):
            import optional_dep  # noqa: F401
    import optional_dep

    assert optional_dep.VALUE == 7
    with skipped_import("optional_dep"):  # loaded already: untouched
        import optional_dep as again
    assert again is optional_dep and sys.modules["optional_dep"] is optional_dep


def _doc_snippets(path, section=None):
    """The ```python blocks of a markdown file (of its `section` only, when given)."""
    with open(path) as f:
        text = f.read()
    if section is not None:
        text = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_library_snippets_run_with_jax_flax_optax_alone():
    """docs/library.md, top to bottom: a plain Linen CNN trained 3 steps with trades_loss in its own loop,
    PGD and AutoAttack on it, a corruption — with TF, torch, ml_collections, tqdm & co. unimportable."""
    snippets = _doc_snippets(os.path.join(ROOT, "docs", "library.md"))
    assert len(snippets) >= 4
    code = "\n".join(snippets) + textwrap.dedent("""
        import sys
        assert not any(sys.modules.get(m) for m in {blocked!r})
        assert metrics["loss"] > 0 and 0.0 <= result.robust_accuracy <= result.clean_accuracy <= 1.0
        assert [k for k in result.per_attack if k != "clean"] == ["apgd-ce", "apgd-t", "fab-t", "square"], result.per_attack
        print("LIBRARY_OK")
        """).format(blocked=NOT_IN_JAX_FLAX_OPTAX)
    out = _run(code, blocked=NOT_IN_JAX_FLAX_OPTAX)
    assert "LIBRARY_OK" in out, out


def test_readme_snippet_calls_every_method_from_a_plain_loop():
    """README's library section: each registered method's pure loss called directly, jax/flax/optax only."""
    from robust_jax import methods

    (snippet,) = _doc_snippets(os.path.join(ROOT, "README.md"), "Using robust_jax as a library")
    code = snippet + textwrap.dedent("""
        import math
        assert sorted(losses) == {names!r}, sorted(losses)
        assert all(math.isfinite(float(loss)) and float(loss) > 0 for loss, _ in losses.values())
        print("README_OK")
        """).format(names=sorted(methods.REGISTRY))
    assert "README_OK" in _run(code, blocked=NOT_IN_JAX_FLAX_OPTAX)


@pytest.mark.parametrize("method", ["pgd_at", "trades", "mart"])
def test_objectives_take_a_model_without_robust_jax_hooks(method):
    """A plain Linen classifier (no `bn=` keyword) trains with the objectives through their adapters too."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from configs import common
    from robust_jax import methods

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    cfg = common.base().method
    cfg.update(dict(name=method, attack=common.attack(eps=0.1, step_size=0.05, steps=2)))
    model = Plain()
    x = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
    params = model.init(jax.random.key(1), x)["params"]
    loss, (state, metrics) = methods.get(cfg, model, 3).loss(params, {}, {"image": x, "label": jnp.arange(4) % 3},
                                                             jax.random.key(2), 0)
    assert state == {} and float(loss) > 0 and "adv_accuracy" in metrics
