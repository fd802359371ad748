"""The failures a user can cause and fix, and the one message each ends a command with.

The entry points print such a failure's message, with no traceback, and exit
non-zero; anything else is a bug and keeps its traceback. The classes live here,
free of heavy imports, so the launcher can name them before JAX starts.
"""

import errno
import sys


class WorkdirError(ValueError):
  """A workdir that cannot be used as asked: not a directory, or another run's."""


class NoCheckpointError(FileNotFoundError):
  """No checkpoint, or none at the requested step."""


class CheckpointRestoreError(ValueError):
  """A checkpoint that cannot be restored: damaged, or written for another model."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (full disk, lost permission...)."""


class TrainingInterrupted(Exception):
  """Training stopped on request (SIGINT) after saving its state."""


# Writes a user can fix: a full disk or quota, a read-only or forbidden place.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG)

INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a process ended by SIGINT


def _expected_types() -> tuple[type, ...]:
  # Imported here: both modules are light, but keep this one importable alone.
  from glow_ood.config_validation import ConfigError  # pylint: disable=g-import-not-at-top
  from glow_ood.data.errors import DataUnavailableError  # pylint: disable=g-import-not-at-top
  return (ConfigError, DataUnavailableError, WorkdirError, NoCheckpointError,
          CheckpointRestoreError, CheckpointWriteError, TrainingInterrupted,
          FloatingPointError)  # the trainer's non-finite loss


def is_expected(error: BaseException) -> bool:
  if isinstance(error, _expected_types()):
    return True
  return isinstance(error, OSError) and error.errno in WRITE_ERRNOS


def message(error: BaseException) -> str:
  """The line to print: what was wrong and what to do."""
  if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
    where = f' {error.filename}' if error.filename else ''
    return (f'{type(error).__name__}: cannot write{where}: {error.strerror}. Free disk space '
            'or fix the permissions (or use another --workdir), then rerun.')
  return f'{type(error).__name__}: {error}'


def exit_with_message(error: BaseException) -> None:
  """Prints the message to stderr and exits (130 after an interrupt, else 1); re-raises
  anything unexpected."""
  if not is_expected(error):
    raise error
  print(message(error), file=sys.stderr, flush=True)
  sys.exit(INTERRUPTED_EXIT_STATUS if isinstance(error, TrainingInterrupted) else 1)
