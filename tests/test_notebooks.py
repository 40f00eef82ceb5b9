"""Executes every notebook in notebooks/ (fast mode) and checks that the committed copies are clean.

The kernel is this interpreter (`sys.executable`, so the notebook sees the same installed packages as
the tests), declared in a kernelspec written to a temporary `JUPYTER_PATH`: no `ipykernel install`
step is needed on a fresh clone, and a `python3` kernelspec installed elsewhere cannot take over.
Each notebook runs in its own temporary working directory with `ROBUST_JAX_NOTEBOOK_FAST=1`, which
the notebooks read to shrink their runs to a few steps, and with a persistent JAX compilation cache.
"""
import glob
import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
KERNEL = "robust_jax_test"
_PROBE = "import sys; print('KERNEL_PYTHON=' + sys.executable)"


def _ids(paths):
    return [os.path.relpath(p, ROOT) for p in paths]


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{os.path.relpath(path, ROOT)}: code cells {dirty} carry outputs; clear them before "
                       "committing (e.g. `jupyter nbconvert --clear-output --inplace`)")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec running this interpreter, found through a private JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"robust_jax tests ({sys.executable})",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # `robust_jax` and the top-level `configs` package come from this checkout, wherever the kernel runs.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("ROBUST_JAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The notebooks compile identical programs for both of their models (init, evaluation, attacks): a
    # persistent compilation cache shared by them roughly halves the run time on a small CPU. The suite's
    # shared cache (tests/conftest.py) is used as is, with its thresholds: in its locked mode every write
    # rescans the directory, so the kernels must not add thousands of tiny entries to it.
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_cache"))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # what the notebooks put in tempfile.mkdtemp()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    return str(workdir)


def _images(nb):
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600, allow_errors=False,
                                     resources={"metadata": {"path": kernel_env}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # the message holds the cell and its traceback
        pytest.fail(f"{os.path.relpath(path, ROOT)} failed:\n{e}")
    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert f"KERNEL_PYTHON={sys.executable}" in probe, f"kernel ran another interpreter: {probe!r}"
    assert _images(nb) >= 1, f"{os.path.relpath(path, ROOT)} produced no figure (no image/png output)"
