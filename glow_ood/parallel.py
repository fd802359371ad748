"""Device mesh, shardings and multi-host helpers for data-parallel jit.

One 1-D mesh over every device of every host, axis 'data'. Batches are sharded
along their leading axis; parameters and optimizer state are replicated.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'absl')  # before the imports it checks

import os
from typing import Callable

from absl import logging
import jax
import jax.flatten_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

# The per-process arithmetic lives with the data pipeline, which must import without jax.
from glow_ood.data import sources

DATA_AXIS = 'data'

# Set by cluster launchers when a job spans several processes.
_MULTIHOST_ENV = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')
_PROCESS_COUNT_ENV = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE', 'JAX_NUM_PROCESSES')


def multihost_requested_by_env() -> bool:
  """True when the environment describes a job with more than one process."""
  if any(os.environ.get(name) for name in _MULTIHOST_ENV):
    return True
  for name in _PROCESS_COUNT_ENV:
    try:
      if int(os.environ.get(name, '1')) > 1:
        return True
    except ValueError:
      pass
  # TPU pod slices list every worker host.
  return len([h for h in os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1


def initialize_distributed(multihost: bool | None, *, coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Calls jax.distributed.initialize() when asked to, or when the environment says so.

  Must run before anything touches a JAX device. multihost=None means auto. On
  Cloud TPU, SLURM and Open MPI the arguments are detected; elsewhere give them
  (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID).
  """
  if multihost is None:
    multihost = multihost_requested_by_env()
  if not multihost:
    return
  if num_processes is None and os.environ.get('JAX_NUM_PROCESSES'):
    num_processes = int(os.environ['JAX_NUM_PROCESSES'])
  if process_id is None and os.environ.get('JAX_PROCESS_ID'):
    process_id = int(os.environ['JAX_PROCESS_ID'])
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def split_cpu_into_devices(count: int) -> None:
  """Makes the host CPU `count` JAX devices, so the data-parallel step runs one shard per core.

  XLA's CPU backend parallelises a single program poorly across cores at these
  sizes; one device per core lets each run its shard of the batch (README,
  Performance, has the measurements). Must run before anything
  touches a JAX backend; batch sizes must then divide by `count`. 1 leaves the
  default (one CPU device). Accelerator backends are not affected.
  """
  if count < 1:
    raise ValueError(f'The number of CPU devices must be at least 1, got {count}.')
  if count == 1:
    return
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    raise ValueError('XLA_FLAGS already sets --xla_force_host_platform_device_count; '
                     'use that or the CPU device count, not both.')
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError as error:
    raise RuntimeError(f'Cannot split the CPU into {count} devices after JAX has started '
                       f'its backends; do it first thing in the process. ({error})') from None


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity), at least 1."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # no affinity API (macOS)
    return max(1, os.cpu_count() or 1)


def config_batch_sizes(config) -> list[int]:
  """Every `batch_size` value set in a (nested) config: each must divide by the devices."""
  found = []
  for key, value in config.items():
    if hasattr(value, 'items'):
      found += config_batch_sizes(value)
    elif key == 'batch_size' and isinstance(value, int) and not isinstance(value, bool):
      found.append(value)
  return found


def auto_cpu_devices(batch_sizes, cores: int | None = None) -> int:
  """One CPU device per usable core, lowered until every batch size divides by it."""
  count = usable_cores() if cores is None else cores
  while count > 1 and any(size % count for size in batch_sizes):
    count -= 1
  return count


def make_mesh() -> Mesh:
  """A 1-D mesh over all global devices.

  Auto axis type: XLA propagates shardings through the model, so model code
  (reshapes in squeeze, reductions in ActNorm) needs no sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def per_example_output(mesh: Mesh) -> NamedSharding:
  """Where a jitted function's per-example results [B, ...] stay for the host to read.

  One process: split like the batch, so each device keeps its own rows and to_host
  copies them out; gathering them on every device first (replicated) is a collective
  whose rendezvous cost the quick Glow's evaluation 30% of its time on 2 CPU devices.
  Several processes: replicated, since each host reads every row.
  """
  return batch_sharding(mesh) if jax.process_count() == 1 else replicated(mesh)


def host_batch_size(global_batch_size: int) -> int:
  """Rows of a global batch that this process supplies."""
  if global_batch_size % jax.process_count():
    raise ValueError(f'Batch size {global_batch_size} is not divisible by the number of '
                     f'processes ({jax.process_count()}).')
  return global_batch_size // jax.process_count()


def host_slice(global_batch: np.ndarray) -> np.ndarray:
  """This process's contiguous rows of a batch every process holds in full.

  The same partition as the data pipeline's per-process split (sources.process_slice),
  but a batch that does not divide evenly raises instead of dropping rows.
  """
  num_rows = global_batch.shape[0]
  host_batch_size(num_rows)  # raises unless divisible
  return global_batch[sources.process_slice(num_rows, jax.process_index(), jax.process_count())]


def global_batch(mesh: Mesh, local_batch: np.ndarray) -> jax.Array:
  """Assembles one global array, sharded over the batch axis, from each host's rows."""
  sharding = batch_sharding(mesh)
  global_shape = (local_batch.shape[0] * jax.process_count(),) + local_batch.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local_batch, global_shape)


def to_host(tree):
  """Fetches a (replicated or fully addressable) pytree as numpy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))


def is_main_process() -> bool:
  return jax.process_index() == 0


def per_device_gradient(gradient: Callable, mesh: Mesh) -> Callable:
  """gradient(params, constants, y, rngs) -> ((loss, terms), grads), taken per device.

  Each device differentiates its own share of the batch y; the shares' losses and
  gradients are averaged across the mesh, the gradients as one flat vector in one
  all-reduce; the per-image terms stay split like the batch. Under XLA's automatic
  partitioning the same gradient ends in one all-reduce operand per parameter (179 at
  the quick Glow), and XLA:CPU's in-process all-reduce pays a rendezvous per operand
  (~45 us each); one operand costs one. Equal to the global gradient up to the order of
  the sums (float round-off) for an objective that is a batch mean of per-image losses
  with no random draws inside the model (ModelKind.per_device_gradient); the batch
  divides evenly over the devices (checked with the config).
  """
  def local(params, constants, y, rngs):
    (loss, terms), grads = gradient(params, constants, y, rngs)
    flat, unravel = jax.flatten_util.ravel_pytree(grads)
    grads = unravel(jax.lax.pmean(flat, DATA_AXIS))
    return (jax.lax.pmean(loss, DATA_AXIS), terms), grads

  # check_vma off: the flows' scans carry values that are replicated on entry and
  # per-device after the first step, which the check would reject; the averaging above is
  # what makes the loss and gradients the same on every device.
  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS), P()),
                       out_specs=((P(), P(DATA_AXIS)), P()), check_vma=False)

