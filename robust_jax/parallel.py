"""Data parallelism: one `jax.jit` over a mesh with a `data` axis; batches sharded, state replicated.

Multi-host: launch one process per host (TPU pods: one per VM, GPUs: one per node), and
`initialize_distributed()` calls `jax.distributed.initialize()` (arguments from the environment on
TPU/SLURM, or `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` otherwise). Each process
reads its own slice of the data and contributes its local batch to one global `jax.Array`.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one; a no-op for a single process."""
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") != "1" \
            or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        kwargs = {}
        if os.environ.get("JAX_COORDINATOR_ADDRESS"):
            kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                          num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                          process_id=int(os.environ["JAX_PROCESS_ID"]))
        jax.distributed.initialize(**kwargs)


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device of every process."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; the batch must split evenly over devices."""
    if global_batch_size % jax.device_count():
        raise ValueError(f"batch size {global_batch_size} must be divisible by the number of devices "
                         f"({jax.device_count()})")
    return global_batch_size // jax.process_count()


def to_global(local_batch: dict, mesh) -> dict:
    """Process-local numpy arrays -> global jax.Arrays sharded along the batch over the `data` axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicate(tree, mesh):
    """Puts a pytree (e.g. the train state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
