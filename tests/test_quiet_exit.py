"""The command line's unraisable-exception hook: TensorStore's 'Event loop is closed' reports
after an abandoned save or restore are dropped; every other one reaches the earlier hook."""

import sys
import types

from glow_ood import quiet_exit


def _unraisable(error):
  return types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                               err_msg=None, object=None)


def test_drops_only_the_closed_loop_reports(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  quiet_exit.install()
  quiet_exit.install()   # once: not a second hook in front of the first
  sys.unraisablehook(_unraisable(RuntimeError('Event loop is closed')))
  other = [_unraisable(RuntimeError('Event loop is closed, and more')),
           _unraisable(ValueError('Event loop is closed')), _unraisable(KeyError('x'))]
  for unraisable in other:
    sys.unraisablehook(unraisable)
  assert seen == other


def test_a_real_unraisable_closed_loop_error_prints_nothing(monkeypatch, capsys):
  import asyncio  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
  quiet_exit.install()
  loop = asyncio.new_event_loop()
  loop.close()

  class CallsTheClosedLoopWhenCollected:
    def __del__(self):
      loop.call_soon_threadsafe(print)
  CallsTheClosedLoopWhenCollected()
  gc.collect()
  assert capsys.readouterr().err == ''



_ABANDON = """
import asyncio, gc, logging, sys
logging.basicConfig()
filename, install, message = sys.argv[1:]
ns = {}
exec(compile(f'def read():\\n  raise ValueError({message!r})\\n', filename, 'exec'), ns)

class Operation:  # an awaitable that is not a coroutine, as a TensorStore future
  def __await__(self):
    ns['read']()
    yield

async def abandon():
  future = asyncio.get_running_loop().create_future()
  try:
    ns['read']()
  except ValueError as error:
    future.set_exception(error)
  del future
  task = asyncio.ensure_future(Operation())  # runs and fails; never awaited
  await asyncio.sleep(0)
  del task
  gc.collect()
if install == 'install':
  from glow_ood import quiet_exit
  quiet_exit.install()
asyncio.run(abandon())
gc.collect()
"""


def _stderr(filename: str, install: str, message: str = 'DATA_LOSS') -> str:
  """stderr of a process that abandons a failed future and a failed task (an awaited
  operation) whose error is raised in code from filename."""
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, '-c', _ABANDON, filename, install, message],
                        check=True, capture_output=True, text=True).stderr


def test_drops_only_never_retrieved_reads_raised_in_orbax_or_tensorstore():
  reports = ('Future exception was never retrieved', 'Task exception was never retrieved')
  tensorstore = 'DATA_LOSS: Error reading "a/.zarray" [tensorstore_spec=\'{}\']'
  for report in reports:
    assert report in _stderr('/x/orbax/checkpoint/read.py', 'no')
    assert report not in _stderr('/x/orbax/checkpoint/read.py', 'install')
    assert report in _stderr('/x/elsewhere/read.py', 'install')   # any other code: logged
    # A TensorStore operation's error carries no orbax frame, only its spec.
    assert report in _stderr('/x/elsewhere/read.py', 'no', tensorstore)
    assert report not in _stderr('/x/elsewhere/read.py', 'install', tensorstore)
