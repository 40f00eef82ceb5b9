"""Parallelism: config fields `model.bn` / `model.dtype`, the mesh and state sharding, the launch
detection of `initialize_distributed`, and, in subprocesses with fake CPU devices (tests/parallel_worker.py):
one train step on 8 devices equals it on 1; ghost BN equals per-device BN; two processes x 2 devices
train to the same parameters as one process x 4 devices, with files written once."""
import json
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from robust_jax import builders, methods, parallel
from robust_jax import state as state_lib
from parallel_worker import flat  # tests/ is on sys.path (no __init__.py); the workers' own flattening
import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "parallel_worker.py")
DIST_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")


def smoke(bn="sync", dtype="float32", batch_size=16):
    c = default.get_config("smoke")
    c.model.update(bn=bn, dtype=dtype)
    c.train.batch_size = batch_size
    return c


# ------------------------------------------------------------------------------ config fields

def test_bn_field_values():
    assert builders.bn_group_size("sync") is None
    assert builders.bn_group_size("ghost:32") == 32
    for bad in ("ghost:0", "ghost:x", "ghost:", "ghost:-4", "ghost:2.5", "foo", "sync:8", ""):
        with pytest.raises(ValueError, match="'sync' or 'ghost:N'"):
            builders.bn_group_size(bad)


def test_build_model_takes_bn_and_dtype_from_config():
    assert builders.build_model(smoke(), 10).bn_group_size is None
    model = builders.build_model(smoke(bn="ghost:4", dtype="bfloat16"), 10)
    assert model.bn_group_size == 4 and model.dtype == jnp.bfloat16
    x = jnp.zeros((8, 16, 16, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert {l.dtype for l in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}  # params/stats stay f32
    logits, inter = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    assert inter["intermediates"]["stem_out"][0].dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match="model.dtype must be one of"):
        builders.build_model(smoke(dtype="float16"), 10)
    c = smoke()
    c.model.kwargs = {"bn_group_size": 4}
    with pytest.raises(ValueError, match="set config.model.bn"):
        builders.build_model(c, 10)


def test_ghost_group_must_divide_the_global_batch():
    with pytest.raises(ValueError, match="must divide the global batch train.batch_size=16"):
        builders.build_run(smoke(bn="ghost:6"), parallel.make_mesh())
    with pytest.raises(ValueError, match="'sync' or 'ghost:N'"):
        builders.build_run(smoke(bn="ghost:0"), parallel.make_mesh())


def test_bfloat16_ghost_train_step_is_finite_with_float32_state():
    c = smoke(bn="ghost:4", dtype="bfloat16")
    mesh = parallel.make_mesh()
    run = builders.build_run(c, mesh)
    step = jax.jit(state_lib.make_train_step(methods.get(c.method, run.model, run.num_classes), run.tx))
    batch = parallel.to_global({"image": np.random.default_rng(0).uniform(size=(16, 16, 16, 1)).astype(np.float32),
                                "label": np.arange(16, dtype=np.int32) % 10}, mesh)
    new, metrics = step(run.state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and int(metrics["nonfinite"]) == 0
    assert {l.dtype for l in jax.tree.leaves((new.params, new.model_state))} == {jnp.dtype(jnp.float32)}


# ----------------------------------------------------------------------------- mesh, sharding, launch

def test_mesh_and_state_sharding():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.devices.size == jax.device_count()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    tree = {"a": jnp.ones(3), "b": {"c": jnp.zeros((2, 2))}}
    shardings = parallel.state_sharding(tree, mesh)
    assert all(s.is_fully_replicated and s.mesh == mesh for s in jax.tree.leaves(shardings))
    placed = parallel.shard_state(tree, mesh)
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(placed))


def test_launch_kind_from_environment():
    kind = parallel.launch_kind
    assert kind({}) is None
    assert kind({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}) == "env"
    srun = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert kind({**srun, "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8"}) == "slurm"
    assert kind({**srun, "SLURM_NTASKS": "1"}) is None  # one task: nothing to join
    assert kind({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}) is None  # the batch script itself, not an srun step
    assert kind({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4"}) == "mpi"
    assert kind({}, on_tpu_vm=True) == "tpu"


def test_initialize_distributed_single_process_and_incomplete_env(monkeypatch):
    for var in DIST_VARS + ("SLURM_STEP_NODELIST", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.initialize_distributed() is None and jax.process_count() == 1
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be set"):
        parallel.initialize_distributed()


# ---------------------------------------------------------------------------- subprocesses

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(mode, out, devices, *args, env=None):
    full = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    full.update(XLA_FLAGS=xla_flags.plus(f"--xla_force_host_platform_device_count={devices}"), JAX_PLATFORMS="cpu",
                TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {}))
    log = open(os.path.join(out, f"{mode}{(env or {}).get('JAX_PROCESS_ID', '')}.log"), "w+")
    proc = subprocess.Popen([sys.executable, WORKER, mode, str(out), *map(str, args)], env=full, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _wait(started, timeout=240):
    """Waits for all workers (one deadline); on a failure or timeout kills the rest and fails with the logs."""
    deadline, problem = time.monotonic() + timeout, None
    try:
        for proc, _ in started:
            if proc.wait(timeout=max(1.0, deadline - time.monotonic())) != 0 and problem is None:
                problem = f"{proc.args[2]} exited with {proc.returncode}"
    except subprocess.TimeoutExpired:
        problem = f"timeout after {timeout} s"
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = []
    for proc, log in started:
        log.seek(0)
        logs.append(f"--- {proc.args[2]} rc={proc.returncode}\n{log.read()[-3000:]}")
        log.close()
    if problem:
        pytest.fail(f"worker failed: {problem}\n" + "\n".join(logs))


def _assert_trees_close(a: dict, b: dict, rtol=1e-5, atol=1e-6):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def _sub(npz, prefix):
    return {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)}


def test_one_step_on_8_devices_equals_one_device(tmp_path):
    """PGD-AT step (attack included) on a batch of 32 over 8 devices vs the same on 1 device: same
    parameters, BN statistics and metrics, with sync BN and ghost BN (groups of 4 = one device's share of
    the batch, and groups of 16 that span two devices); and an AdvBN step with per-device statistics groups."""
    _wait([_start("step", tmp_path, 8)])
    info = json.load(open(tmp_path / "step_info.json"))
    for bn in ("sync", "ghost:4", "ghost:16", "advbn"):
        assert info[bn]["all_reduce"], "the 8-device step has no all-reduce"
        d = np.load(tmp_path / f"step_{bn.replace(':', '')}.npz")
        many, one = _sub(d, "many/"), _sub(d, "one/")
        _assert_trees_close(many, one)
        init = _sub(d, "one_init/")
        for k, v in init.items():  # the update itself agrees, and is not trivially zero (AdvBN: frozen front)
            change_one, change_many = one[k] - v, many[k] - v
            if bn == "advbn" and ("'conv0'" in k or "'layer1'" in k):
                assert np.abs(change_many).max() == 0, k
                continue
            assert np.abs(change_one).max() > 1e-4, k
            assert np.abs(change_many - change_one).max() <= 1e-4 * np.abs(change_one).max(), k


def test_ghost_bn_equals_per_device_bn(tmp_path):
    """'ghost:4' on a batch of 16 over 4 devices == plain BN on each group of 4 (by hand, and per device
    under shard_map, as PyTorch DDP computes it): outputs, and running statistics averaged over groups."""
    _wait([_start("ghost", tmp_path, 4)])
    d = np.load(tmp_path / "ghost.npz")
    ghost, hand, device, sync = (_sub(d, p) for p in ("ghost/", "hand/", "device/", "sync/"))
    _assert_trees_close(ghost, hand)
    _assert_trees_close(ghost, device)
    y = "['y']"
    assert np.abs(ghost[y] - sync[y]).max() > 1e-2  # per-group statistics really differ from global ones


def test_two_processes_train_like_one(tmp_path):
    """`train_and_evaluate` as 2 processes x 2 CPU devices (gloo, loopback coordinator from JAX_* variables)
    == 1 process x 4 devices fed the same global batches, after 3 PGD-AT steps; process 1 writes no file
    outside the orbax checkpoints, and the logs hold each step once."""
    out = tmp_path / "out"
    out.mkdir()
    port = _free_port()
    workers = [_start("train", out, 2, tmp_path / "multi",
                      env={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                           "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    _wait(workers, timeout=200)
    # Afterwards, not beside them: a third process on this 2-core machine slows the collectives ~3x.
    _wait([_start("reference", out, 4, tmp_path / "single")], timeout=120)

    p0, p1, ref = (dict(np.load(out / f)) for f in ("train_0.npz", "train_1.npz", "reference.npz"))
    _assert_trees_close(p0, p1, rtol=0, atol=0)  # replicated state: both processes hold the same values
    _assert_trees_close(p0, ref)
    info = [json.load(open(out / f"train_{i}.json")) for i in range(2)]
    assert [(i["process_index"], i["process_count"], i["device_count"], i["local_device_count"]) for i in info] \
        == [(0, 2, 4, 2), (1, 2, 4, 2)]
    assert info[0]["accuracy"] == info[1]["accuracy"] == json.load(open(out / "reference.json"))["accuracy"]

    assert info[1]["written"] == [], info[1]["written"]
    assert {"metrics.jsonl", "config.json", "report.json", "report.md"} <= set(info[0]["written"])
    multi, single = (tmp_path / d for d in ("multi", "single"))
    lines = [json.loads(l) for l in open(multi / "metrics.jsonl")]
    ref_lines = [json.loads(l) for l in open(single / "metrics.jsonl")]
    assert [l["step"] for l in lines] == [1, 2, 3, 3]  # each step once (once more for the final eval)
    for l, r in zip(lines, ref_lines):
        assert l.keys() == r.keys()
        for k in l:
            np.testing.assert_allclose(l[k], r[k], rtol=1e-5, err_msg=k)
    assert len(os.listdir(multi / "tensorboard")) == 1
    assert sorted(os.listdir(multi / "checkpoints")) == sorted(os.listdir(single / "checkpoints"))


def test_two_processes_start_from_a_one_process_checkpoint(tmp_path):
    """`model.init_from` = a workdir saved by one process on one device, read by 2 processes x 1 device
    (orbax must place the arrays on this run's devices, not on the saving run's mesh): both processes build
    the dual-BN AdvBN run with the saved weights, each BN copied into the clean and adv sets."""
    from robust_jax.checkpoint import Checkpoints

    source = builders.build_run(smoke(), parallel.make_mesh())
    ckpts = Checkpoints(str(tmp_path / "source"))
    ckpts.save(source.state, force=True)
    ckpts.close()
    port = _free_port()
    _wait([_start("init_from", tmp_path, 1, tmp_path / "source",
                  env={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                       "JAX_PROCESS_ID": str(i)}) for i in range(2)], timeout=120)
    p0, p1 = (dict(np.load(tmp_path / f"init_from_{i}.npz")) for i in range(2))
    _assert_trees_close(p0, p1, rtol=0, atol=0)
    want = flat({"params": source.state.params, "model_state": source.state.model_state})
    for k, v in p0.items():  # ['params']['layer2']['bn']['adv']['scale'] <- ['params']['layer2']['bn']['scale']
        src = k.replace("['clean']", "").replace("['adv']", "")
        np.testing.assert_array_equal(v, want[src], err_msg=k)
    assert sum("['adv']" in k for k in p0) >= 4 and len(p0) > len(want)
