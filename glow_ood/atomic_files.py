"""Writing a file so that readers see either the old file or the whole new one.

    with atomic_files.atomic_write(path, 'wb') as f:
      np.savez(f, **arrays)

The content goes to a hidden temporary file beside `path` (same directory, so
same file system and the rename is atomic), which is flushed to disk and
renamed over `path` only when the block finishes. On any exception, including
KeyboardInterrupt, the temporary file is removed and `path` is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import secrets
from typing import IO

TEMP_PREFIX = '.tmp_'


def temp_path_for(path: str) -> str:
  """A fresh hidden name beside `path`; it keeps the extension so tools that look at
  names (np.savez, PIL) see the right one."""
  directory, name = os.path.split(os.path.abspath(path))
  stem, extension = os.path.splitext(name)
  return os.path.join(directory, f'{TEMP_PREFIX}{stem}.{secrets.token_hex(6)}{extension}')


def _exclusive(path: str, flags: int) -> int:
  # O_EXCL: never write into a file some other writer has opened. Mode 0o666 less the
  # umask, as open() gives (mkstemp's 0o600 would make the final file private).
  return os.open(path, flags | os.O_EXCL, 0o666)


def _open_temp(path: str, mode: str, open_kwargs: dict) -> IO:
  """A new temporary file beside `path`, open for writing."""
  while True:
    try:
      # pylint: disable-next=unspecified-encoding
      return open(temp_path_for(path), mode, opener=_exclusive, **open_kwargs)
    except FileExistsError:
      continue


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', **open_kwargs) -> Iterator[IO]:
  """Yields a file object whose content replaces `path` when the block succeeds.

  Args:
    path: the file to write; its directory is created if missing.
    mode: 'wb' or 'w' (any write mode of open()).
    **open_kwargs: passed to open(), e.g. encoding='utf-8'.

  Yields:
    The open temporary file.
  """
  if 'w' not in mode:
    raise ValueError(f'atomic_write needs a write mode ("w" or "wb"), got {mode!r}.')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  file = _open_temp(path, mode, open_kwargs)
  tmp_path = file.name
  try:
    with file as f:
      yield f
      f.flush()
      # Without it a crash soon after the rename can leave an empty file under `path`.
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise
