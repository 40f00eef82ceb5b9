"""Data parallelism: one `jax.jit` over a mesh with a `data` axis; batches sharded, state replicated.

Multi-host: launch one process per host (TPU pod slices: one per VM; GPUs: one per node or one per GPU),
and `initialize_distributed()` joins them with `jax.distributed.initialize()` before anything touches a
device. Each process reads its own slice of the data and contributes its local batch to one global
`jax.Array` (`to_global`). Files are written once: metrics, config and reports by process 0, checkpoints
by orbax (which coordinates the processes itself). See docs/parallel.md.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Mapping, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
log = logging.getLogger(__name__)


GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips attach to a Cloud TPU VM as PCI devices of Google's vendor id


def _on_cloud_tpu_vm() -> bool:
    """True on a Cloud TPU VM: the TPU runtime (libtpu) is installed and TPU chips are on the PCI bus."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def launch_kind(environ: Mapping[str, str], on_tpu_vm: bool = False) -> Optional[str]:
    """How this process was launched, from its environment: 'env' (JAX_COORDINATOR_ADDRESS, plus
    JAX_NUM_PROCESSES and JAX_PROCESS_ID), 'slurm' (an `srun` step of several tasks), 'mpi' (`mpirun`
    with several ranks), 'tpu' (a Cloud TPU VM: JAX reads the slice's workers from the metadata server),
    or None (a single process: nothing to join)."""
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return "env"
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    if environ.get("SLURM_STEP_NODELIST") and environ.get("SLURM_PROCID") is not None and int(tasks) > 1:
        return "slurm"
    if environ.get("OMPI_MCA_orte_hnp_uri") and int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "mpi"
    if on_tpu_vm:
        return "tpu"
    return None


def _env_int(environ, name: str) -> int:
    value = environ.get(name)
    if value is None or not value.strip().isdigit():
        raise ValueError(f"JAX_COORDINATOR_ADDRESS={environ['JAX_COORDINATOR_ADDRESS']!r} is set, so {name} "
                         f"must be set to a non-negative integer too (got {value!r}); see docs/parallel.md")
    return int(value)


def initialize_distributed() -> Optional[str]:
    """Joins a multi-process run when the environment describes one (see `launch_kind`); a no-op for a
    single process or when already initialised. Must run before any JAX computation. Returns the kind."""
    if jax.distributed.is_initialized():
        return "initialized"
    kind = launch_kind(os.environ, on_tpu_vm=_on_cloud_tpu_vm())
    if kind == "env":
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=_env_int(os.environ, "JAX_NUM_PROCESSES"),
                                   process_id=_env_int(os.environ, "JAX_PROCESS_ID"))
    elif kind in ("slurm", "mpi"):  # JAX's own cluster detection fills in the arguments
        jax.distributed.initialize()
    elif kind == "tpu":
        # Every TPU VM looks the same from here, single host or slice: a notebook that already used a
        # device (single host; JAX then refuses to join) carries on as it is; another failed join is
        # reported, not fatal.
        try:
            jax.distributed.initialize()
        except (RuntimeError, ValueError) as e:
            if "must be called before any JAX calls" in str(e):
                return None
            log.warning("jax.distributed.initialize() failed on this Cloud TPU VM (%s); continuing as a single "
                        "process (a multi-host slice will not see its other hosts)", e)
            return None
    return kind


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device of every process. Its axis is `Auto` (the compiler propagates the
    shardings and inserts the collectives), not `jax.make_mesh`'s default `Explicit`, under which model
    and attack code written for one device (e.g. indexing along the sharded batch) fails to trace."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def state_sharding(state, mesh):
    """The sharding of every leaf of the train state: replicated on every device (data parallelism).
    The one place to change for FSDP/ZeRO (e.g. shard large parameters and optimiser moments along
    `data`); `jit` follows the input shardings and orbax restores into them."""
    return jax.tree.map(lambda _: replicated(mesh), state)


def shard_state(state, mesh):
    """Places the train state on the mesh as `state_sharding` says."""
    return jax.device_put(state, state_sharding(state, mesh))


def replicate(tree, mesh):
    """Puts a pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


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
