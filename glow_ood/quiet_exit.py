"""The command-line processes, less one known artefact of an abandoned checkpoint write.

When a save fails (a full disk) or a restore fails (a damaged array file), orbax
stops awaiting its TensorStore operations and closes the asyncio loop they would
report to; each operation still in flight then ends by calling
loop.call_soon_threadsafe on the closed loop, and TensorStore hands that
RuntimeError('Event loop is closed') to sys.unraisablehook, whose default prints
its traceback: dozens of them around the one-line message that says what happened,
saying nothing it does not. Nothing in Python can catch them.

`install()` (called by the launcher and the experiment command when run as
programs, never on import, and not under --debug) puts a hook in front of
sys.unraisablehook that drops exactly these; every other unraisable exception
reaches the hook that was there before.
"""

from __future__ import annotations

import sys

CLOSED_LOOP = 'Event loop is closed'


def is_closed_loop_report(unraisable) -> bool:
  error = getattr(unraisable, 'exc_value', None)
  return isinstance(error, RuntimeError) and str(error) == CLOSED_LOOP


def install() -> None:
  """Drops the closed-loop reports for the rest of the process (once)."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_reports', False):
    return

  def hook(unraisable):
    if not is_closed_loop_report(unraisable):
      previous(unraisable)
  hook.drops_closed_loop_reports = True
  sys.unraisablehook = hook
