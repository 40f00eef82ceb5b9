"""Child process of tests/test_parallel.py: `python tests/parallel_worker.py MODE OUT_DIR [WORKDIR]`.

Runs with `XLA_FLAGS=--xla_force_host_platform_device_count=N` set by the parent (before jax is
imported), computes one thing and writes its arrays to OUT_DIR as .npz files for the parent to compare:

  step       one PGD-AT train step (sync/ghost BN) and one AdvBN step on a mesh of all devices and of one device
  ghost      ghost BN on the sharded batch vs plain BN applied to each group by hand and under shard_map
  train      `train.train_and_evaluate` in WORKDIR as one process of a multi-process run (JAX_* env vars),
             recording every file this process opens for writing under WORKDIR (outside checkpoints/)
  reference  the same run as ONE process, fed the global batches the two processes of `train` would build
  init_from  one of 2 processes building the AdvBN run with `model.init_from` = WORKDIR, a checkpoint that
             ONE process on one device saved (another topology): the dual-BN variables it starts from
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402  (XLA_FLAGS is already in the environment)
import numpy as np  # noqa: E402


def flat(tree, prefix=""):
    """A pytree -> {path: numpy array}, for np.savez."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {prefix + jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def small_config(bn="sync", batch_size=16, num_steps=3):
    from configs import default

    c = default.get_config("smoke")
    c.model.bn = bn
    c.method.attack.steps = 2
    c.optim.update(schedule="constant", warmup_epochs=0.0)  # lr 0.2 from the first step: visible updates
    c.train.update(batch_size=batch_size, num_steps=num_steps, log_every=1)
    c.eval.update(batch_size=16, num_examples=48, suite="clean")
    return c


def advbn_config():
    """AdvBN (dual-BN small CNN, synchronised head BNs) with statistics groups of 4 = one device's share."""
    from configs import digits_advbn

    c = digits_advbn.get_config("smoke")
    c.method.advbn.update(group_size=4, steps=2)
    c.optim.update(lr=0.2, schedule="constant")
    c.train.update(batch_size=32)
    return c


def mode_step(out):
    """One train step over all devices vs over one device, from the same state, batch and key."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from robust_jax import builders, data, methods, parallel
    from robust_jax import state as state_lib

    n = jax.device_count()
    mesh_n, mesh_1 = parallel.make_mesh(), Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
    info = {}
    for bn in ("sync", "ghost:4", "ghost:16", "advbn"):  # ghost groups = one device's examples, or two devices'
        c = small_config(bn=bn, batch_size=32) if bn != "advbn" else advbn_config()
        batch = next(data.train_batches(c.data, global_batch_size=32, mesh=mesh_n, seed=0))
        assert len(batch["image"].sharding.device_set) == n
        key = jax.random.key(7)
        results = {}
        for name, mesh in (("many", mesh_n), ("one", mesh_1)):
            run = builders.build_run(c, mesh)
            method = methods.get(c.method, run.model, run.num_classes)
            step = jax.jit(state_lib.make_train_step(method, run.tx))
            b = {k: jax.device_put(np.asarray(v), NamedSharding(mesh, P(parallel.DATA_AXIS))) for k, v in batch.items()}
            compiled = step.lower(run.state, b, key).compile()  # run as compiled: one compile per mesh
            if name == "many":
                info[bn] = {"all_reduce": "all-reduce" in compiled.as_text()}
            new, metrics = compiled(run.state, b, key)
            assert len(new.params["fc"]["kernel"].sharding.device_set) == len(mesh.devices.flat)
            assert new.params["fc"]["kernel"].sharding.is_fully_replicated
            results.update(flat({"params": new.params, "model_state": new.model_state,
                                 "metrics": metrics}, f"{name}/"))
            results.update(flat({"params": run.state.params}, f"{name}_init/"))
        np.savez(os.path.join(out, f"step_{bn.replace(':', '')}.npz"), **results)
    json.dump(info, open(os.path.join(out, "step_info.json"), "w"))


def mode_ghost(out):
    """Ghost BN ('ghost:4' on a batch of 16 sharded over 4 devices) vs plain BN on each group of 4."""
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from robust_jax import builders, parallel

    assert jax.device_count() == 4
    mesh = parallel.make_mesh()
    c = small_config()
    ghost = builders.build_model(_with_bn(c, "ghost:4"), 10)
    plain = builders.build_model(_with_bn(c, "sync"), 10)
    assert ghost.bn_group_size == 4 and plain.bn_group_size is None
    x = jax.random.uniform(jax.random.key(0), (16, 16, 16, 1))
    v = plain.init(jax.random.key(1), x[:1], train=False)
    # Non-trivial running statistics to start from, so the update's (1 - momentum) term is checked too.
    v = {"params": v["params"], "batch_stats": jax.tree.map(lambda s: s + 0.3, v["batch_stats"])}

    def apply(model, v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"])

    xs = jax.device_put(x, NamedSharding(mesh, P(parallel.DATA_AXIS)))
    vr = parallel.replicate(v, mesh)
    y_ghost, s_ghost = jax.jit(lambda v, x: apply(ghost, v, x))(vr, xs)
    y_sync, s_sync = jax.jit(lambda v, x: apply(plain, v, x))(vr, xs)

    # By hand: plain BN on each group of 4 examples, running statistics averaged over the groups.
    group = jax.jit(lambda v, x: apply(plain, v, x))
    parts = [group(v, x[i:i + 4]) for i in range(0, 16, 4)]
    y_hand = jnp.concatenate([p[0] for p in parts])
    s_hand = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), 0), *[p[1] for p in parts])

    # Per device: plain (local) BN inside shard_map, as PyTorch DataParallel/DDP computes it per GPU.
    def local(v, x):
        y, s = apply(plain, v, x)
        return y, jax.lax.pmean(s, parallel.DATA_AXIS)

    y_dev, s_dev = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                                         out_specs=(P(parallel.DATA_AXIS), P())))(vr, xs)
    np.savez(os.path.join(out, "ghost.npz"),
             **flat({"y": y_ghost, "s": s_ghost}, "ghost/"), **flat({"y": y_hand, "s": s_hand}, "hand/"),
             **flat({"y": y_dev, "s": s_dev}, "device/"), **flat({"y": y_sync, "s": s_sync}, "sync/"))


def _with_bn(c, bn):
    c = c.copy_and_resolve_references()
    c.model.bn = bn
    return c


def _record_writes(workdir):
    """Audit hook: every path under `workdir` (but outside checkpoints/) this process opens for writing."""
    workdir = os.path.realpath(workdir)
    skip = os.path.join(workdir, "checkpoints")
    written = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(ch in mode for ch in "wax+") if isinstance(mode, str) else bool((flags or 0) & write_flags)
        elif event in ("os.mkdir", "os.remove"):
            path, writing = args[0], True
        elif event == "os.rename":  # also os.replace: an atomic write lands on its destination
            for path in args[:2]:
                record(path)
            return
        else:
            return
        if writing:
            record(path)

    def record(path):
        if isinstance(path, (str, bytes, os.PathLike)) and not isinstance(path, int):
            p = os.path.realpath(os.fsdecode(path))
            if (p == workdir or p.startswith(workdir + os.sep)) and not (p == skip or p.startswith(skip + os.sep)):
                written.append(os.path.relpath(p, workdir))

    sys.addaudithook(hook)
    return written


def _final_state(config, workdir):
    from robust_jax import builders, parallel
    from robust_jax.checkpoint import Checkpoints

    run = builders.build_run(config, parallel.make_mesh())
    ckpts = Checkpoints(workdir)
    state = ckpts.restore(run.state)
    ckpts.close()
    return state


def _join_two_processes():
    """gloo collectives, then `jax.distributed` from the JAX_* variables (the run's own call is then a no-op)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from robust_jax import parallel

    kind = parallel.initialize_distributed()
    assert kind == "env" and jax.process_count() == 2, (kind, jax.process_count())


def mode_train(out, workdir):
    """One process of a multi-process run: the real entry point, distributed init from JAX_* variables."""
    written = _record_writes(workdir)
    _join_two_processes()
    from robust_jax import train

    c = small_config()
    report = train.train_and_evaluate(c, workdir)
    state = _final_state(c, workdir)
    i = jax.process_index()
    np.savez(os.path.join(out, f"train_{i}.npz"), **flat({"params": state.params, "model_state": state.model_state}))
    json.dump({"process_index": i, "process_count": jax.process_count(), "device_count": jax.device_count(),
               "local_device_count": jax.local_device_count(), "written": sorted(set(written)),
               "accuracy": report["accuracy"]}, open(os.path.join(out, f"train_{i}.json"), "w"))


def mode_reference(out, workdir):
    """One process, all devices, fed exactly the global batches of the 2-process run: each process's
    stream is built by the real pipeline with `data.pipeline._process_shard` pinned to (p, 2)."""
    from robust_jax import data, parallel, train
    from robust_jax.data import pipeline

    assert jax.process_count() == 1
    real_stream, real_shard = data.train_batches, pipeline._process_shard

    def two_process_stream(cfg, *, global_batch_size, mesh, seed, start_step=0, **kwargs):
        streams, firsts = [], []
        for p in range(2):  # the generator reads its shard at its first `next`
            pipeline._process_shard = lambda p=p: (p, 2)
            try:
                s = real_stream(cfg, global_batch_size=global_batch_size // 2, mesh=mesh, seed=seed,
                                start_step=start_step, **kwargs)
                firsts.append(next(s))
            finally:
                pipeline._process_shard = real_shard
            streams.append(s)
        pending = firsts
        while True:
            yield parallel.to_global({k: np.concatenate([np.asarray(b[k]) for b in pending]) for k in pending[0]},
                                     mesh)
            pending = [next(s) for s in streams]

    data.train_batches = two_process_stream
    c = small_config()
    report = train.train_and_evaluate(c, workdir)
    data.train_batches = real_stream
    state = _final_state(c, workdir)
    np.savez(os.path.join(out, "reference.npz"), **flat({"params": state.params, "model_state": state.model_state}))
    json.dump({"device_count": jax.device_count(), "accuracy": report["accuracy"]},
              open(os.path.join(out, "reference.json"), "w"))


def mode_init_from(out, source):
    _join_two_processes()
    from robust_jax import builders, parallel

    c = advbn_config()
    c.model.init_from = source
    run = builders.build_run(c, parallel.make_mesh())
    np.savez(os.path.join(out, f"init_from_{jax.process_index()}.npz"),
             **flat({"params": run.state.params, "model_state": run.state.model_state}))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"step": lambda: mode_step(out), "ghost": lambda: mode_ghost(out),
     "train": lambda: mode_train(out, sys.argv[3]), "reference": lambda: mode_reference(out, sys.argv[3]),
     "init_from": lambda: mode_init_from(out, sys.argv[3])}[mode]()
    print("WORKER OK", mode)
