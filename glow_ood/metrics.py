"""Training feedback: TensorBoard scalars/images via clu, and a console progress line."""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'clu.metric_writers')  # before the imports it checks

import logging as std_logging
import sys
import time

from absl import logging
from clu import metric_writers
import jax
import numpy as np

from glow_ood import user_errors


class _QuietOrbaxInfo(std_logging.Filter):
  """Drops orbax's per-save INFO chatter; its warnings and errors still show."""

  def filter(self, record):
    return record.levelno > std_logging.INFO or '/orbax/' not in record.pathname


class _QuietWriteFailures(std_logging.Filter):
  """Drops the reports that orbax's and clu's background threads log (with tracebacks)
  when a write fails on a full disk or quota, a read-only or forbidden place, and asyncio's
  'Task exception was never retrieved' for the writes a failed save abandoned: the main
  thread gets the same error when it waits for them and ends with one line saying so."""

  def filter(self, record):
    if record.levelno < std_logging.WARNING or not (
        record.name == 'asyncio' or any(part in record.pathname for part in ('/orbax/', '/clu/'))):
      return True
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
      try:
        error = RuntimeError(record.getMessage())
      except Exception:  # pylint: disable=broad-except
        return True
    return user_errors.write_failure(error) is None


def quiet_checkpoint_logging() -> None:
  """Keeps the console to progress, metrics and problems (call once per process)."""
  handler = logging.get_absl_handler()
  for kind in (_QuietOrbaxInfo, _QuietWriteFailures):
    if not any(isinstance(f, kind) for f in handler.filters):
      handler.addFilter(kind())


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard event files in workdir (process 0 only; other hosts just log)."""
  return metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)


def flatten_metrics(metrics: dict, prefix: str = '') -> dict[str, float]:
  """{'logdet': {'coupling': x}} -> {'logdet/coupling': x}, as Python floats."""
  flat = {}
  for key, value in metrics.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten_metrics(value, name + '/'))
    else:
      flat[name] = float(np.asarray(value))
  return flat


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class ProgressLine:
  """Prints 'step 120/5000 [##....] 2.4% | 3.210 bits/dim | 95 img/s | ETA 12:03' lines.

  Throughput and ETA are measured from the first report (so compilation is excluded).
  """

  def __init__(self, total_steps: int, batch_size: int, stream=None, width: int = 20):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.stream = stream or sys.stdout
    self.width = width
    self._start = None   # (time, step) of the first report
    self._last = None

  def update(self, step: int, **values: float) -> dict[str, float]:
    """Prints one line for `step`; returns {'images_per_sec': ...} once measurable."""
    now = time.perf_counter()
    rates = {}
    if self._start is None:
      self._start = (now, step)
    elif step > self._last[1]:
      rates['images_per_sec'] = (step - self._last[1]) * self.batch_size / (now - self._last[0])
    self._last = (now, step)

    fraction = step / max(self.total_steps, 1)
    filled = int(round(self.width * min(fraction, 1.0)))
    parts = [f'step {step}/{self.total_steps}',
             f'[{"#" * filled}{"." * (self.width - filled)}] {100 * fraction:5.1f}%']
    parts += [f'{value:.4g} {name}' for name, value in values.items()]
    start_time, start_step = self._start
    if step > start_step:
      seconds_per_step = (now - start_time) / (step - start_step)
      parts.append(f'{self.batch_size / seconds_per_step:.0f} img/s')
      parts.append(f'ETA {_format_duration(seconds_per_step * (self.total_steps - step))}')
    if jax.process_index() == 0:
      print(' | '.join(parts), file=self.stream, flush=True)
    return rates


def flatten_config(config) -> dict:
  """A ConfigDict as {'train.batch_size': 32, ...} with scalar values, for hparams."""
  flat = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      flat.update({f'{key}.{k}': v for k, v in flatten_config(value).items()})
    elif isinstance(value, (bool, int, float, str)):
      flat[key] = value
    else:
      flat[key] = str(value)
  return flat
