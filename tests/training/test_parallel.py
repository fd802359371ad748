"""glow_ood.parallel: the mesh, shardings, per-process rows and host copies.

Placement over several devices is checked on 4 forced CPU devices in a
subprocess (the device count is fixed once JAX starts); the per-process
arithmetic in-process, with the process index and count faked.
"""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import parallel
from glow_ood.data import sources
from tests.training.conftest import REPO_ROOT, TINY_CONFIG, subprocess_env


def _fake_processes(monkeypatch, index, count):
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: count)


def _rows(num):
  # Distinct values per row, so a wrong slice cannot pass for a right one.
  return np.arange(num * 6, dtype=np.int32).reshape(num, 2, 3)


@pytest.mark.parametrize('count', [1, 2, 3, 4, 8])
def test_host_slice_partitions_the_batch_in_process_order(monkeypatch, count):
  batch = _rows(24)
  parts = []
  for index in range(count):
    _fake_processes(monkeypatch, index, count)
    part = parallel.host_slice(batch)
    assert part.shape == (24 // count, 2, 3)
    np.testing.assert_array_equal(part, batch[index * (24 // count):(index + 1) * (24 // count)])
    parts.append(part)
  np.testing.assert_array_equal(np.concatenate(parts), batch)


@pytest.mark.parametrize('num, count', [(10, 4), (7, 2), (3, 8)])
def test_host_slice_refuses_a_batch_that_does_not_divide(monkeypatch, num, count):
  _fake_processes(monkeypatch, 0, count)
  with pytest.raises(ValueError, match=f'Batch size {num} is not divisible by the number '
                                       fr'of processes \({count}\)'):
    parallel.host_slice(_rows(num))
  with pytest.raises(ValueError, match='not divisible'):
    parallel.host_batch_size(num)


def test_host_batch_size(monkeypatch):
  _fake_processes(monkeypatch, 1, 4)
  assert parallel.host_batch_size(32) == 8
  _fake_processes(monkeypatch, 0, 1)
  assert parallel.host_batch_size(5) == 5


@pytest.mark.parametrize('num, count', [(10, 3), (7, 2), (12, 4), (5, 5), (3, 4)])
def test_process_slice_is_contiguous_equal_and_drops_the_remainder(num, count):
  slices = [sources.process_slice(num, index, count) for index in range(count)]
  rows = [list(range(num))[s] for s in slices]
  per_process = num // count
  assert all(len(r) == per_process for r in rows)
  covered = [i for r in rows for i in r]
  # In order, no overlap, and only the last num % count rows are left out.
  assert covered == list(range(per_process * count))


def test_host_slice_and_the_data_pipeline_agree(monkeypatch):
  batch = _rows(12)
  for index in range(3):
    _fake_processes(monkeypatch, index, 3)
    np.testing.assert_array_equal(parallel.host_slice(batch),
                                  batch[sources.process_slice(12, index, 3)])


def test_is_main_process(monkeypatch):
  _fake_processes(monkeypatch, 0, 2)
  assert parallel.is_main_process()
  _fake_processes(monkeypatch, 1, 2)
  assert not parallel.is_main_process()


def test_to_host_gives_numpy_with_the_same_tree_and_values():
  tree = {'a': jnp.arange(3.0), 'b': (jnp.int32(7), np.ones((2, 2), np.float16)),
          'c': {'d': jnp.zeros((0,))}, 'none': None}
  host = parallel.to_host(tree)
  assert jax.tree.structure(host) == jax.tree.structure(tree)
  for got, want in zip(jax.tree.leaves(host), jax.tree.leaves(tree)):
    assert isinstance(got, np.ndarray) and not isinstance(got, jax.Array)
    assert got.dtype == want.dtype and got.shape == np.shape(want)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_make_mesh_spans_every_device():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == (parallel.DATA_AXIS,)
  assert mesh.devices.size == jax.device_count()
  assert set(mesh.devices.flat) == set(jax.devices())


def _clear_multihost_env(monkeypatch):
  # pylint: disable-next=protected-access
  for name in (*parallel._MULTIHOST_ENV, *parallel._PROCESS_COUNT_ENV,
               'TPU_WORKER_HOSTNAMES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize('env, expected', [
    ({}, False),
    ({'SLURM_NTASKS': '1'}, False),
    ({'SLURM_NTASKS': 'many'}, False),      # unparsable: not evidence of several processes
    ({'TPU_WORKER_HOSTNAMES': 'host-a'}, False),
    ({'SLURM_NTASKS': '4'}, True),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-a,host-b'}, True),
])
def test_multihost_requested_by_env(monkeypatch, env, expected):
  _clear_multihost_env(monkeypatch)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert parallel.multihost_requested_by_env() is expected


def test_initialize_distributed_only_when_asked(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  _clear_multihost_env(monkeypatch)
  parallel.initialize_distributed(None)    # auto, single-process environment
  parallel.initialize_distributed(False)
  assert not calls
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '1')
  parallel.initialize_distributed(None, coordinator_address='localhost:1')
  assert calls == [{'coordinator_address': 'localhost:1', 'num_processes': 2, 'process_id': 1}]
  # Explicit arguments win over the environment.
  parallel.initialize_distributed(True, num_processes=3, process_id=0)
  assert calls[-1] == {'coordinator_address': None, 'num_processes': 3, 'process_id': 0}


_FOUR_DEVICES = textwrap.dedent('''
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P
    from glow_ood import parallel

    assert jax.device_count() == 4, jax.devices()
    mesh = parallel.make_mesh()
    assert dict(mesh.shape) == {'data': 4}, mesh.shape
    assert list(mesh.devices.flat) == jax.devices()

    assert parallel.batch_sharding(mesh).spec == P('data')
    assert parallel.replicated(mesh).spec == P()

    local = np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2)
    x = parallel.global_batch(mesh, local)
    assert x.shape == (8, 3, 2) and x.dtype == np.float32
    assert x.sharding.is_equivalent_to(parallel.batch_sharding(mesh), x.ndim)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.device for s in shards] == jax.devices()
    for i, shard in enumerate(shards):
      assert shard.index[0] == slice(2 * i, 2 * i + 2), shard.index
      np.testing.assert_array_equal(np.asarray(shard.data), local[2 * i:2 * i + 2])
    np.testing.assert_array_equal(parallel.to_host(x), local)

    # Replicated: every device holds the whole array.
    w = jax.device_put(np.arange(5.0), parallel.replicated(mesh))
    assert len(w.addressable_shards) == 4
    for shard in w.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), np.arange(5.0))

    # A jitted reduction over the sharded batch sees the global batch.
    total = jax.jit(lambda a: a.sum(axis=0), out_shardings=parallel.replicated(mesh))(x)
    host = parallel.to_host({'x': x, 'total': total})
    np.testing.assert_array_equal(host['total'], local.sum(axis=0))
    assert isinstance(host['x'], np.ndarray) and isinstance(host['total'], np.ndarray)

    # Per-example results stay split like the batch (one process): no gather on the devices,
    # each device keeps its own rows, and the host reads them back in order.
    doubled = jax.jit(lambda a: 2 * a, out_shardings=parallel.per_example_output(mesh))(x)
    assert doubled.sharding == parallel.batch_sharding(mesh)
    assert [s.data.shape[0] for s in doubled.addressable_shards] == [2, 2, 2, 2]
    np.testing.assert_array_equal(parallel.to_host(doubled), 2 * local)
    print('four devices ok')
''')


def test_placement_on_four_devices():
  env = subprocess_env(devices=4)
  result = subprocess.run([sys.executable, '-c', _FOUR_DEVICES], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'four devices ok' in result.stdout


_SPLIT_CPU = textwrap.dedent('''
    import jax
    import numpy as np
    from glow_ood import parallel

    parallel.split_cpu_into_devices(2)  # first thing, before any backend use
    assert jax.device_count() == 2 and jax.devices()[0].platform == 'cpu', jax.devices()
    mesh = parallel.make_mesh()
    x = parallel.global_batch(mesh, np.arange(8.0).reshape(4, 2))
    assert len({s.device for s in x.addressable_shards}) == 2
    total = jax.jit(lambda a: a.sum(), out_shardings=parallel.replicated(mesh))(x)
    assert float(total) == 28.0
    print('split ok')
''')


def _env_without_forced_devices():
  env = subprocess_env()
  del env['XLA_FLAGS']
  return env


def test_split_cpu_into_devices_gives_a_two_device_mesh():
  result = subprocess.run([sys.executable, '-c', _SPLIT_CPU], cwd=REPO_ROOT,
                          env=_env_without_forced_devices(), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'split ok' in result.stdout


def test_split_cpu_into_devices_rejects_bad_counts_and_late_calls(monkeypatch):
  with pytest.raises(ValueError, match='at least 1'):
    parallel.split_cpu_into_devices(0)
  parallel.split_cpu_into_devices(1)  # the default: nothing to do, even after start-up
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  with pytest.raises(ValueError, match='not both'):
    parallel.split_cpu_into_devices(2)
  monkeypatch.delenv('XLA_FLAGS')
  jax.devices()  # the backend is up
  with pytest.raises(RuntimeError, match='first thing in the process'):
    parallel.split_cpu_into_devices(3)


def test_main_cpu_devices_flag_error_is_one_line():
  result = subprocess.run([sys.executable, '-m', 'glow_ood.main', f'--config={TINY_CONFIG}',
                           '--workdir=/nonexistent/w', '--cpu_devices=-1'], cwd=REPO_ROOT,
                          env=_env_without_forced_devices(), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1, result.stderr[-3000:]
  assert '--cpu_devices' in result.stderr and 'non-negative' in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('sizes, cores, expected', [
    ([64, 256], 2, 2), ([64, 256], 4, 4), ([6, 256], 4, 2), ([9, 27], 4, 3), ([7], 4, 1),
    ([], 3, 3), ([64], 1, 1)])
def test_auto_cpu_devices_is_the_most_cores_every_batch_divides_by(sizes, cores, expected):
  assert parallel.auto_cpu_devices(sizes, cores=cores) == expected


def test_config_batch_sizes_walks_every_block():
  from glow_ood.configs.pairs import fashion_mnist_to_mnist  # pylint: disable=g-import-not-at-top
  config = fashion_mnist_to_mnist.get_config('quick')
  sizes = parallel.config_batch_sizes(config)
  assert {64, 32, 256} <= set(sizes)  # Glow and VAE, PixelCNN++, evaluation
  assert config.experiment.attacks.batch_size in sizes
  assert parallel.config_batch_sizes({'a': {'batch_size': True, 'b': {'batch_size': 6}}}) == [6]


def test_main_cpu_devices_zero_splits_one_per_core_and_says_so(tmp_path, idx_dir):
  cores = parallel.usable_cores()
  expected = parallel.auto_cpu_devices([8, 16], cores=cores)  # the tiny config's batches
  result = subprocess.run([sys.executable, '-m', 'glow_ood.main', f'--config={TINY_CONFIG}',
                           f'--workdir={tmp_path / "w"}', f'--config.data.path={idx_dir}',
                           '--config.train.num_steps=2', '--config.train.checkpoint_every=2',
                           '--cpu_devices=0'], cwd=REPO_ROOT,
                          env=_env_without_forced_devices(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  said = (f'CPU split into {expected} JAX devices (--cpu_devices=0: one per usable core, '
          f'{cores} here')
  assert (said in result.stdout) == (expected > 1), result.stdout[-2000:]


def test_auto_split_leaves_jax_alone_where_it_would_not_apply(monkeypatch):
  from glow_ood import launch_flags  # pylint: disable=g-import-not-at-top
  jax.devices()  # this process's backend is up: a split can no longer take effect
  assert launch_flags.auto_cpu_devices({'train': {'batch_size': 64}}) == 1
  monkeypatch.setattr(launch_flags.host_memory, 'jax_backend_started', lambda: False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert launch_flags.auto_cpu_devices({'train': {'batch_size': 64}}) == 1
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setattr(launch_flags.host_memory, 'jax_will_run_on_cpu', lambda: False)
  assert launch_flags.auto_cpu_devices({'train': {'batch_size': 64}}) == 1  # an accelerator
  monkeypatch.setattr(launch_flags.host_memory, 'jax_will_run_on_cpu', lambda: True)
  monkeypatch.setattr(launch_flags.parallel, 'usable_cores', lambda: 4)
  assert launch_flags.auto_cpu_devices({'train': {'batch_size': 10}}) == 2


_CHUNKS_ON_FOUR_DEVICES = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from glow_ood import evaluate
    from glow_ood import parallel

    mesh = parallel.make_mesh()
    assert mesh.size == 4
    local = np.random.default_rng(0).normal(size=(32, 5, 3)).astype(np.float32)
    x = parallel.global_batch(mesh, local)
    fn = lambda b: {'norm': jnp.sqrt((b * b).sum(axis=(1, 2))), 'rows': jnp.tanh(b).sum(-1)}

    def run(chunk):
      jitted = jax.jit(lambda a: evaluate.chunked_apply(fn, a, chunk),
                       in_shardings=parallel.batch_sharding(mesh),
                       out_shardings=parallel.per_example_output(mesh))
      return jitted, parallel.to_host(jitted(x))
    whole = run(0)[1]
    jitted, chunked = run(8)              # 4 chunks of 8 images, 2 on each device
    for name in whole:
      np.testing.assert_array_equal(chunked[name], whole[name])
    hlo = jitted.lower(x).compile().as_text()
    collectives = [op for op in ('all-gather', 'all-to-all', 'collective-permute', 'all-reduce')
                   if op in hlo]
    assert not collectives, collectives   # strided chunks: each device loops over its own rows
    print('chunks ok')
''')


def test_strided_evaluation_chunks_stay_on_their_devices():
  """evaluate.chunked_apply under a batch split over four devices: the values of the whole
  batch pass, and no data moves between devices (every chunk has its share on each)."""
  result = subprocess.run([sys.executable, '-c', _CHUNKS_ON_FOUR_DEVICES], cwd=REPO_ROOT,
                          env=subprocess_env(devices=4), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'chunks ok' in result.stdout
