"""Data parallelism with ``jax.sharding``: one mesh axis, ``data``.

The batch is split over the devices of a 1-D ``Mesh``; parameters, optimizer
state and the (small) training set are replicated. ``seqjax.train`` jits its
multi-step train function with these shardings, so XLA's SPMD partitioner
inserts the gradient all-reduce; nothing here is ``pmap``.

Several processes (hosts): ``initialize_distributed`` wraps
``jax.distributed.initialize``; the mesh then spans every process's devices
and each process feeds only its own slice of the global batch
(``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seqjax.errors import SeqjaxError

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str, num_processes: int,
                           process_id: int) -> bool:
  """Joins a multi-process run (once); True if this call initialized it.

  Must run before anything touches a JAX backend. One process is a no-op.
  """
  if num_processes <= 1 or jax.distributed.is_initialized():
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  return True


def resolve_num_devices(num_devices: int) -> int:
  """``num_devices``, with 0 meaning every device (of every process)."""
  return num_devices or jax.device_count()


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh (axis ``data``) over ``num_devices`` devices (0: all).

  With several processes, each contributes the same number of its own
  devices, so each feeds an equal, contiguous slice of the batch.
  """
  devices = jax.devices()
  n = resolve_num_devices(num_devices)
  if n > len(devices):
    raise SeqjaxError(f"asked for {n} devices but only {len(devices)} "
                      f"{jax.default_backend()} device(s) are present")
  processes = jax.process_count()
  if n % processes:
    raise SeqjaxError(f"{n} devices do not divide by the {processes} "
                      "processes")
  chosen = []
  for p in range(processes):
    own = [d for d in devices if d.process_index == p]
    if len(own) < n // processes:
      raise SeqjaxError(f"{n} devices over {processes} processes: process "
                        f"{p} has only {len(own)} device(s)")
    chosen += own[:n // processes]
  return Mesh(np.array(chosen), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def indices_sharding(mesh: Mesh) -> NamedSharding:
  """Batch indices (K, B) of K steps: B split over ``data``."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise SeqjaxError(f"batch size {batch_size} does not divide by the "
                      f"{mesh.size} devices of the mesh")


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  # Every process holds the whole value (same seed, same data): each device
  # takes its part from the local copy.
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf replicated on every device of ``mesh`` (all processes)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: _put(x, sharding), tree)


def process_slice(sharding: NamedSharding, shape: tuple[int, ...],
                  axis: int) -> slice:
  """The contiguous range along ``axis`` this process's devices hold."""
  ranges = [index[axis].indices(shape[axis])[:2] for index in
            sharding.addressable_devices_indices_map(shape).values()]
  return slice(min(r[0] for r in ranges), max(r[1] for r in ranges))


def shard_indices(idx_KB: np.ndarray, mesh: Mesh) -> jax.Array:
  """Global (K, B) batch indices, B split over ``data``; each process passes
  only its own columns, so it feeds only its slice of the global batch."""
  sharding = indices_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(idx_KB, sharding)
  local = idx_KB[:, process_slice(sharding, idx_KB.shape, axis=1)]
  return jax.make_array_from_process_local_data(sharding, local, idx_KB.shape)


def local_copy(tree: Any) -> Any:
  """Replicated arrays -> this process's first copy (a one-device array), so
  code written for one device (evaluation, decoding) runs unchanged."""
  def one(x):
    if (isinstance(x, jax.Array) and len(x.sharding.device_set) > 1
        and x.is_fully_replicated):
      return x.addressable_data(0)
    return x
  return jax.tree.map(one, tree)


def mesh_or_none(num_devices: int) -> Optional[Mesh]:
  """The mesh over ``num_devices`` devices, or None for one device in one
  process (the plain single-device path)."""
  if resolve_num_devices(num_devices) == 1 and jax.process_count() == 1:
    return None
  return make_mesh(num_devices)
