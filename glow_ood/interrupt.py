"""SIGINT (Ctrl-C) during training: finish the current step, save, and stop.

A second SIGINT interrupts at once, as Python does by default. Only the main
thread of a single-process run takes the signal over: under several processes
a save is collective, and one process alone cannot make it.
"""

import signal
import threading

import jax

from glow_ood.user_errors import TrainingInterrupted  # pylint: disable=unused-import


class StopRequest:
  """Context manager; `requested` turns True on the first SIGINT."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True
    signal.signal(signal.SIGINT, self._previous)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
    return False
