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
