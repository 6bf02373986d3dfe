"""Data parallelism with JAX's own sharding: one mesh axis over all devices, batch split, state replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import PyTree


DATA_AXIS = "data"


def initialise_distributed(**kwargs) -> None:
    """Join a multi-host run (`jax.distributed.initialize(**kwargs)`); call before anything else touches jax.

    Not needed on one host. With several, every process runs the same script; each loads its own slice of
    every global batch (see `local_slice`).
    """
    jax.distributed.initialize(**kwargs)


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Split axis `batch_axis` over the `data` mesh axis, replicate the others."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array leaf of `tree` on all devices of `mesh` (single host)."""
    sh = replicated(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sh) if isinstance(x, jax.Array | np.ndarray) else x, tree)


def local_slice(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this process loads (all of them on one host)."""
    n, p = jax.process_count(), jax.process_index()
    if global_batch_size % n:
        raise ValueError(f"batch size {global_batch_size} must be divisible by the number of processes {n}")
    k = global_batch_size // n
    return slice(p * k, (p + 1) * k)


def shard_batch(local: PyTree, mesh: Mesh, batch_axis: int = 0) -> PyTree:
    """Assemble global arrays from this process's rows, split along `batch_axis` over the mesh.

    The global batch size (local size times the number of processes) must be divisible by the number of
    devices, so that every device gets the same number of examples.
    """
    sh = batch_sharding(mesh, batch_axis)
    n_dev = mesh.devices.size

    def put(x):
        b = x.shape[batch_axis] * jax.process_count()
        if b % n_dev:
            raise ValueError(f"batch size {b} must be divisible by the number of devices {n_dev} for data parallelism")
        return jax.make_array_from_process_local_data(sh, np.asarray(x))

    return jax.tree.map(put, local)
