"""The failures a user can cause and fix, and the one message each ends a command with.

The entry points print such a failure's message, with no traceback, and exit
non-zero; anything else is a bug and keeps its traceback. The classes live here,
free of heavy imports, so the launcher can name them before JAX starts.
"""

import errno
import os
import re
import sys


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


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


class WorkerFailed(RuntimeError):
  """A worker process of the experiment command ended without its model's results (its own
  message is the last line it printed)."""


# Writes a user can fix: a full disk or quota, a read-only or forbidden place.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG)

INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a process ended by SIGINT


def _expected_types() -> tuple[type, ...]:
  # Imported here: the module is light, but keep this one importable alone.
  from glow_ood.data.errors import DataUnavailableError  # pylint: disable=g-import-not-at-top
  return (ConfigError, DataUnavailableError, WorkdirError, NoCheckpointError,
          CheckpointRestoreError, CheckpointWriteError, TrainingInterrupted,
          WorkerFailed, FloatingPointError)  # the trainer's non-finite loss


# How libraries that do not raise OSError report a full disk or quota: TensorStore
# (orbax's array files) raises ValueError('RESOURCE_EXHAUSTED: ... No space left on device
# [os_error_code='28']'), TensorFlow (TensorBoard event files) its ResourceExhaustedError,
# which clu's asynchronous writer wraps in an AsyncError. RESOURCE_EXHAUSTED alone is not
# enough: XLA reports running out of device memory with the same code.
_DISK_FULL_WORDS = {'No space left on device': errno.ENOSPC, 'Disk quota exceeded': errno.EDQUOT,
                    'File too large': errno.EFBIG, 'Read-only file system': errno.EROFS}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
# A file named in such a message: TensorStore quotes it, TensorFlow puts it before '; '.
_QUOTED_FILE = re.compile(r'(?:local file|Failed writing:) "([^"]+)"')
_TF_FILE = re.compile(r'(/[^\s;]+); ')


def _chain(error: BaseException | None):
  """error, then its causes and contexts, each once."""
  seen = set()
  while error is not None and id(error) not in seen:
    yield error
    seen.add(id(error))
    error = error.__cause__ or error.__context__


def write_failure(error: BaseException | None) -> OSError | None:
  """The OSError behind a failed write that the user can fix (a full disk or quota, a
  read-only or forbidden place), following the chain of causes; one made from the text of
  a TensorStore or TensorFlow error that reports such a failure; None for anything else."""
  for link in _chain(error):
    if isinstance(link, OSError) and link.errno in WRITE_ERRNOS:
      return link
  for link in _chain(error):
    text = str(link)
    code = _OS_ERROR_CODE.search(text)
    number = int(code.group(1)) if code else next(
        (n for words, n in _DISK_FULL_WORDS.items() if words in text), None)
    if number not in WRITE_ERRNOS:
      continue
    named = _QUOTED_FILE.findall(text) or _TF_FILE.findall(text)
    return OSError(number, os.strerror(number), named[0] if named else None)
  return None


def is_expected(error: BaseException) -> bool:
  if isinstance(error, _expected_types()):
    return True
  return write_failure(error) is not None


def one_line(text: str) -> str:
  """A message written over several lines (a heading, '  - item' lists) as one line."""
  out, previous_item = '', False
  for raw in text.splitlines():
    line = raw.strip()
    if not line:
      continue
    item = line.startswith('- ')
    if item:
      line = line[2:]
    if item:
      separator = '; ' if previous_item else ' '
    else:
      separator = ' ' if out.endswith(('.', ':', ';', '!', '?')) else '. '
    out = f'{out}{separator}{line}' if out else line
    previous_item = item
  return out


def message(error: BaseException) -> str:
  """The line to print: what was wrong and what to do."""
  return one_line(_message(error))


def _message(error: BaseException) -> str:
  if not isinstance(error, _expected_types()) or isinstance(error, OSError):
    failure = write_failure(error)
    if failure is not None:
      where = f' {failure.filename}' if failure.filename else ''
      return (f'{type(failure).__name__}: cannot write{where}: {failure.strerror}. Free disk '
              'space or fix the permissions (or use another --workdir), then rerun.')
  return f'{type(error).__name__}: {error}'


def exit_with_message(error: BaseException, suffix: str = '') -> None:
  """Prints the message (and suffix, e.g. where a rerun resumes) to stderr and exits (130
  after an interrupt, else 1); re-raises anything unexpected."""
  if not is_expected(error):
    raise error
  print(message(error) + suffix, file=sys.stderr, flush=True)
  sys.exit(INTERRUPTED_EXIT_STATUS if isinstance(error, TrainingInterrupted) else 1)
