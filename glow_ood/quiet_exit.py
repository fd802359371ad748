"""The command-line processes, less one known artefact of an abandoned checkpoint write.

When a save fails (a full disk) or a restore fails (a damaged array file), orbax
stops awaiting its TensorStore operations and closes the asyncio loop they would
report to; each operation still in flight then ends by calling
loop.call_soon_threadsafe on the closed loop, and TensorStore hands that
RuntimeError('Event loop is closed') to sys.unraisablehook, whose default prints
its traceback: dozens of them around the one-line message that says what happened,
saying nothing it does not. Nothing in Python can catch them. A damaged checkpoint can
also fail several of orbax's reads at once; it raises the first, and asyncio logs each
other one ("Future exception was never retrieved", with its traceback) when the
abandoned future is collected.

`install()` (called by the launcher and the experiment command when run as
programs, never on import, and not under --debug) puts a hook in front of
sys.unraisablehook that drops exactly these; every other unraisable exception
reaches the hook that was there before, and a filter on asyncio's logger that drops
its never-retrieved reports of exceptions raised inside orbax or by the TensorStore
reads it awaits (the restore has already failed with the first, and said so in one
line); every other record is logged.
"""

from __future__ import annotations

import logging
import sys
import traceback

CLOSED_LOOP = 'Event loop is closed'


def is_closed_loop_report(unraisable) -> bool:
  error = getattr(unraisable, 'exc_value', None)
  return isinstance(error, RuntimeError) and str(error) == CLOSED_LOOP


NEVER_RETRIEVED = ('Future exception was never retrieved', 'Task exception was never retrieved')


# TensorStore's errors name the spec of the store that failed; a TensorStore future that
# orbax awaits directly fails with no Python frame of orbax's in its traceback.
TENSORSTORE_MARK = 'tensorstore_spec'


def is_abandoned_checkpoint_read(record: logging.LogRecord) -> bool:
  """An asyncio never-retrieved report of an exception raised in orbax's code or by a
  TensorStore operation it started."""
  if not str(record.msg).startswith(NEVER_RETRIEVED) or not record.exc_info:
    return False
  if TENSORSTORE_MARK in str(record.exc_info[1]):
    return True
  frames = traceback.extract_tb(record.exc_info[2])
  return any('/orbax/' in frame.filename for frame in frames)


class _DropAbandonedCheckpointReads(logging.Filter):

  def filter(self, record):
    return not is_abandoned_checkpoint_read(record)


def install() -> None:
  """Drops the closed-loop and abandoned-read reports for the rest of the process (once)."""
  asyncio_logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _DropAbandonedCheckpointReads) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropAbandonedCheckpointReads())
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_reports', False):
    return

  def hook(unraisable):
    if not is_closed_loop_report(unraisable):
      previous(unraisable)
  hook.drops_closed_loop_reports = True
  sys.unraisablehook = hook
