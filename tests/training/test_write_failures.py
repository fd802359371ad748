"""A full disk (or quota, or read-only place) recognised however a library reports it:
an OSError, TensorStore's RESOURCE_EXHAUSTED ValueError, TensorFlow's ResourceExhaustedError
(wrapped by clu's asynchronous writer); one line naming the file; the background threads'
reports of the same failure dropped from the log."""

import errno
import logging

import pytest

from glow_ood import metrics
from glow_ood import user_errors

TENSORSTORE = ('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/12.orbax-checkpoint-'
               'tmp/state/_sharding": Failed writing: "/w/checkpoints/12.orbax-checkpoint-tmp/'
               'state/_sharding.__lock": Failed to write 251 bytes to file 5: No space left on '
               "device [os_error_code='28']")
TENSORFLOW = ('{{function_node __wrapped__FlushSummaryWriter_device_/job:localhost/replica:0/task:0'
              '/device:CPU:0}} /w/events.out.tfevents.1.host.1.v2; No space left on device\n'
              '\tFailed to flush 5 events to /w/events.out.tfevents.1.host.1.v2')


def test_tensorstore_words_are_a_full_disk_naming_the_file():
  failure = user_errors.write_failure(ValueError(TENSORSTORE))
  assert failure.errno == errno.ENOSPC
  assert failure.filename == '/w/checkpoints/12.orbax-checkpoint-tmp/state/_sharding'
  assert user_errors.message(ValueError(TENSORSTORE)) == (
      'OSError: cannot write /w/checkpoints/12.orbax-checkpoint-tmp/state/_sharding: No space '
      'left on device. Free disk space or fix the permissions (or use another --workdir), then '
      'rerun.')


def test_tensorflow_error_wrapped_by_the_async_writer():
  tf = pytest.importorskip('tensorflow')
  try:
    try:
      raise tf.errors.ResourceExhaustedError(None, None, TENSORFLOW)
    except tf.errors.ResourceExhaustedError as cause:
      raise RuntimeError("Error '...' occurred ASYNCHRONOUSLY.") from cause
  except RuntimeError as error:
    wrapped = error
  assert user_errors.is_expected(wrapped)
  assert user_errors.write_failure(wrapped).filename == '/w/events.out.tfevents.1.host.1.v2'
  assert '\n' not in user_errors.message(wrapped)


@pytest.mark.parametrize('text, code', [
    ("Failed to write: Disk quota exceeded [os_error_code='122']", errno.EDQUOT),
    ('open: Read-only file system', errno.EROFS),
    ('[Errno 28] No space left on device', errno.ENOSPC),
])
def test_other_words_and_codes(text, code):
  assert user_errors.write_failure(RuntimeError(text)).errno == code


@pytest.mark.parametrize('error', [
    ValueError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB.'),
    RuntimeError('something else'),
    OSError(errno.ENOENT, 'No such file or directory', '/x'),
])
def test_not_a_write_failure(error):
  assert user_errors.write_failure(error) is None
  assert not user_errors.is_expected(error)


def test_an_os_error_in_the_chain_wins():
  try:
    try:
      raise OSError(errno.EACCES, 'Permission denied', '/w/config.json')
    except OSError as cause:
      raise ValueError('wrapped') from cause
  except ValueError as error:
    assert user_errors.write_failure(error).filename == '/w/config.json'


def test_one_line_joins_headings_and_lists():
  text = 'Problem here\nLooked for:\n  - /a\n  - /b\nOffline options:\n  - x: y\n'
  assert user_errors.one_line(text) == 'Problem here. Looked for: /a; /b. Offline options: x: y'


def _record(pathname, message, exc=None, name='absl', level=logging.ERROR):
  exc_info = (type(exc), exc, None) if exc is not None else None
  return logging.LogRecord(name, level, pathname, 1, message, None, exc_info)


def test_the_background_threads_reports_of_a_write_failure_are_dropped():
  quiet = metrics._QuietWriteFailures()  # pylint: disable=protected-access
  orbax = '/venv/site-packages/orbax/checkpoint/_src/futures/future.py'
  assert not quiet.filter(_record(orbax, 'raised an exception', ValueError(TENSORSTORE)))
  assert not quiet.filter(_record(orbax, f'_SignalingThread.run() raised: {TENSORSTORE}'))
  assert not quiet.filter(_record('/venv/site-packages/clu/asynclib.py', 'Error in producer',
                                  RuntimeError(TENSORFLOW)))
  assert not quiet.filter(_record('/lib/asyncio/base_events.py', 'Task exception was never '
                                  'retrieved', ValueError(TENSORSTORE), name='asyncio'))
  # Anything else orbax reports, and the same words from our own code, still show.
  assert quiet.filter(_record(orbax, 'raised an exception', ValueError('another problem')))
  assert quiet.filter(_record('/repo/glow_ood/train.py', TENSORSTORE))
  assert quiet.filter(_record(orbax, TENSORSTORE, level=logging.INFO))
