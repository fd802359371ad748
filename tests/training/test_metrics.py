"""glow_ood.metrics: flattening, the TensorBoard writer read back, the progress line."""

import errno
import glob
import io
import logging as std_logging
import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from glow_ood import metrics


def test_flatten_metrics_nests_with_slashes_and_gives_python_floats():
  flat = metrics.flatten_metrics({
      'bits_per_dim': jnp.float32(3.25),
      'logdet': {'coupling': np.float64(-1.5), 'actnorm': {'level0': jnp.array(2)}},
      'lr': 1e-3,
  })
  assert flat == {'bits_per_dim': 3.25, 'logdet/coupling': -1.5,
                  'logdet/actnorm/level0': 2.0, 'lr': 1e-3}
  assert all(type(v) is float for v in flat.values())
  assert metrics.flatten_metrics({'a': {'b': 1}}, prefix='train/') == {'train/a/b': 1.0}
  assert metrics.flatten_metrics({}) == {}


def test_flatten_metrics_refuses_non_scalars():
  with pytest.raises(TypeError):
    metrics.flatten_metrics({'per_example': np.ones(3)})


def test_flatten_config_dotted_keys_and_scalar_values():
  config = ml_collections.ConfigDict({
      'seed': 0,
      'train': {'batch_size': 32, 'learning_rate': 1e-3, 'ema': False,
                'schedule': {'warmup_steps': 10}},
      'data': {'name': 'fashion_mnist', 'path': None, 'sizes': (28, 32)},
  })
  flat = metrics.flatten_config(config)
  assert flat == {'seed': 0, 'train.batch_size': 32, 'train.learning_rate': 1e-3,
                  'train.ema': False, 'train.schedule.warmup_steps': 10,
                  'data.name': 'fashion_mnist', 'data.path': 'None', 'data.sizes': '(28, 32)'}
  # Types that hparams accept are kept as they are.
  assert type(flat['train.ema']) is bool and type(flat['seed']) is int


def _events(workdir):
  """{(step, tag): (plugin name, value)} of every event file in workdir."""
  found = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        found[(event.step, value.tag)] = (value.metadata.plugin_data.plugin_name, value)
  return found


def test_writer_writes_scalars_images_and_hparams_that_read_back(tmp_path):
  workdir = str(tmp_path)
  grid = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
  writer = metrics.make_writer(workdir)
  writer.write_hparams(metrics.flatten_config(ml_collections.ConfigDict(
      {'train': {'batch_size': 32}, 'model': {'flow': 'affine'}})))
  writer.write_scalars(3, metrics.flatten_metrics({'bits_per_dim': 2.5,
                                                  'logdet': {'coupling': -1.25}}))
  writer.write_scalars(7, {'bits_per_dim': 2.0})
  writer.write_images(7, {'samples/T0.7': grid})
  writer.close()
  events = _events(workdir)

  def scalar(step, tag):
    plugin, value = events[(step, tag)]
    assert plugin == 'scalars'
    return float(tensor_util.make_ndarray(value.tensor))
  assert scalar(3, 'bits_per_dim') == 2.5
  assert scalar(3, 'logdet/coupling') == -1.25
  assert scalar(7, 'bits_per_dim') == 2.0

  plugin, value = events[(7, 'samples/T0.7')]
  assert plugin == 'images'
  width, height, *pngs = tensor_util.make_ndarray(value.tensor)
  assert (int(width), int(height)) == (5, 4) and len(pngs) == 2
  for png, want in zip(pngs, grid):
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), want)

  hparams = [v for (_, tag), (plugin, v) in events.items() if plugin == 'hparams'
             and tag.endswith('session_start_info')]
  assert len(hparams) == 1
  start = plugin_data_pb2.HParamsPluginData.FromString(
      hparams[0].metadata.plugin_data.content).session_start_info
  assert start.hparams['train.batch_size'].number_value == 32
  assert start.hparams['model.flow'].string_value == 'affine'


def test_writer_on_other_processes_only_logs(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  writer = metrics.make_writer(str(tmp_path))
  writer.write_scalars(1, {'bits_per_dim': 2.5})
  writer.close()
  assert not glob.glob(os.path.join(str(tmp_path), 'events.out.tfevents.*'))


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  fake = _Clock()
  monkeypatch.setattr(metrics.time, 'perf_counter', fake)
  return fake


def test_progress_line_rates_and_eta_on_a_fake_clock(clock):
  stream = io.StringIO()
  progress = metrics.ProgressLine(total_steps=100, batch_size=8, stream=stream, width=10)
  # The first report starts the clock (compilation happened before it): no rate yet.
  assert progress.update(10, bits_per_dim=3.21) == {}
  first = stream.getvalue().splitlines()[-1]
  assert first == 'step 10/100 | [#.........]  10.0% | 3.21 bits_per_dim'

  clock.now += 4.0    # 20 steps of 8 images in 4 s
  rates = progress.update(30, bits_per_dim=3.0)
  assert rates == {'images_per_sec': pytest.approx(40.0)}
  line = stream.getvalue().splitlines()[-1]
  # 0.2 s a step, 70 steps to go: 14 s.
  assert line == 'step 30/100 | [###.......]  30.0% | 3 bits_per_dim | 40 img/s | ETA 0:14'

  clock.now += 1.0    # 20 steps in 1 s: the rate is since the last report...
  rates = progress.update(50)
  assert rates == {'images_per_sec': pytest.approx(160.0)}
  line = stream.getvalue().splitlines()[-1]
  # ...throughput and ETA since the first: 40 steps in 5 s, 50 to go.
  assert line.endswith('| 64 img/s | ETA 0:06'), line


def test_progress_line_same_step_twice_gives_no_rate(clock):
  progress = metrics.ProgressLine(total_steps=10, batch_size=2, stream=io.StringIO())
  progress.update(1)
  clock.now += 1
  assert progress.update(1) == {}


def test_progress_line_long_eta_and_overshoot(clock):
  stream = io.StringIO()
  progress = metrics.ProgressLine(total_steps=100_000, batch_size=1, stream=stream, width=4)
  progress.update(0)
  clock.now += 10.0
  progress.update(10)     # 1 s a step, 99,990 to go
  assert stream.getvalue().splitlines()[-1].endswith('ETA 27:46:30')
  clock.now += 1.0
  progress.update(200_000)  # past the end: a full bar, no negative ETA
  line = stream.getvalue().splitlines()[-1]
  assert '[####] 200.0%' in line and line.endswith('ETA 0:00')


def test_progress_line_prints_on_process_zero_only(clock, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  stream = io.StringIO()
  progress = metrics.ProgressLine(total_steps=10, batch_size=2, stream=stream)
  progress.update(1)
  clock.now += 1
  assert progress.update(2) == {'images_per_sec': pytest.approx(2.0)}
  assert stream.getvalue() == ''


def test_quiet_checkpoint_logging_drops_only_orbax_info_and_write_failures():
  handler = logging.get_absl_handler()
  original = list(handler.filters)
  # An earlier training run in this process may have installed them already.
  for f in original:
    if isinstance(f, (metrics._QuietOrbaxInfo, metrics._QuietWriteFailures)):
      handler.removeFilter(f)
  before = list(handler.filters)
  try:
    metrics.quiet_checkpoint_logging()
    metrics.quiet_checkpoint_logging()   # idempotent
    added = [f for f in handler.filters if f not in before]
    assert sorted(type(f).__name__ for f in added) == ['_QuietOrbaxInfo', '_QuietWriteFailures']
    def record(level, pathname, error=None, name='x'):
      exc_info = (type(error), error, None) if error else None
      return std_logging.LogRecord(name, level, pathname, 1, 'msg', None, exc_info)
    def passes(r):
      return all(f.filter(r) for f in added)
    orbax = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'
    ours = '/repo/glow_ood/train.py'
    full = OSError(errno.ENOSPC, 'No space left on device', '/ckpt/x')
    assert not passes(record(std_logging.INFO, orbax))
    assert passes(record(std_logging.WARNING, orbax))
    assert passes(record(std_logging.INFO, ours))
    # A background thread's disk-full report is dropped (the main thread says it in one
    # line); any other orbax error, and a disk-full error logged by our own code, are kept.
    assert not passes(record(std_logging.ERROR, orbax, full))
    assert not passes(record(std_logging.ERROR, '/x/asyncio/base_events.py', full, 'asyncio'))
    assert passes(record(std_logging.ERROR, orbax, ValueError('shape mismatch')))
    assert passes(record(std_logging.ERROR, ours, full))
  finally:
    for f in handler.filters[:]:
      handler.removeFilter(f)
    for f in original:
      handler.addFilter(f)
