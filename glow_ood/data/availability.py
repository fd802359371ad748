"""Whether a split of a data set can be read, and how many images it holds, without reading it.

    check_split(spec, split)   # raises DataUnavailableError (one line) or returns
                               # the number of images (None where it cannot be told cheaply)

Used before any compute (the launcher and the experiment command), so that a
missing file or split is reported before training or restoring anything rather
than at the first periodic evaluation or after a training. Only headers and
directory listings are read: an IDX file's 16-byte header, an .npz file's zip
directory and array header, a PNG's size, a prepared TFDS data set's
dataset_info. Damage further inside a file is still found when it is read.
A TFDS data set that is not prepared cannot be checked without downloading it:
it passes here and the loading says what is wrong.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zipfile
import zlib

import numpy as np

from glow_ood.data import digits_grid
from glow_ood.data import glyphs
from glow_ood.data import idx
from glow_ood.data import npz
from glow_ood.data import sources
from glow_ood.data import spec as spec_lib
from glow_ood.data import tfds_source
from glow_ood.data.errors import DataUnavailableError


def _problem(text: str) -> DataUnavailableError:
  return DataUnavailableError(text)


def check_split(spec: spec_lib.DataSpec, split: str) -> int | None:
  """The number of images of `split` (None: not known without reading it).

  Raises DataUnavailableError, with a one-line message, when the split cannot be read.
  """
  if sources.resolve_source(spec, split) == 'tfds':
    return _tfds_count(spec, split)
  path = sources.offline_path(spec)
  if split not in sources.OFFLINE_SPLITS:
    raise _problem(f'split {split!r} does not exist offline ({path}): offline copies have '
                   f'the splits {", ".join(sources.OFFLINE_SPLITS)}')
  if path is None:
    raise _problem(f'{spec.name!r} has no standard offline copy: give data.path')
  if spec.name == 'npz' or path.endswith('.npz'):
    return _npz_count(path, split)
  if not os.path.exists(path):
    raise _problem(f'{path} does not exist')
  if spec.name == 'notmnist_glyphs':
    if not os.path.isdir(path) or not glyphs.find_font_files(path):
      raise _problem(f'{path} holds no font files (.ttf, .otf, .ttc) to render letters from')
    return None
  if os.path.isdir(path):
    return _idx_count(path, split)
  if spec.name == 'mnist':
    return _digits_grid_count(path, split)
  raise _problem(f'cannot read {spec.name!r} from {path}: expected a directory of IDX files '
                 'or an .npz file')


def _idx_count(directory: str, split: str) -> int:
  candidates = [os.path.join(directory, stem + suffix)
                for stem in idx.IMAGE_STEMS[split] for suffix in ('.gz', '')]
  path = next((c for c in candidates if os.path.isfile(c)), None)
  if path is None:
    raise _problem(f'no {split!r} image IDX file in {directory} (looked for '
                   f'{", ".join(os.path.basename(c) for c in candidates)})')
  try:
    with open(path, 'rb') as f:
      head = f.read(2)
    opener = gzip.open if head == idx.GZIP_MAGIC else open
    with opener(path, 'rb') as f:
      header = f.read(4)
      if len(header) == 4 and header[:3] == bytes([0, 0, idx.UINT8_CODE]) and header[3]:
        dims = struct.unpack(f'>{header[3]}I', f.read(4 * header[3]))
      else:
        raise _problem(f'IDX file {path} has a bad header {header.hex()!r}: not uint8 '
                       'image data')
  except (OSError, EOFError, zlib.error, struct.error) as err:
    raise _problem(f'IDX file {path} is corrupt or truncated ({err})') from None
  return int(dims[0])


def _npz_count(path: str, split: str) -> int:
  if not os.path.isfile(path):
    raise _problem(f'npz file not found: {path}')
  keys = npz.array_keys(split)
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
      key = next((k for k in keys if f'{k}.npy' in names), None)
      if key is None:
        found = sorted(n[:-len('.npy')] for n in names if n.endswith('.npy'))
        raise _problem(f'{path} has no array for split {split!r}: looked for keys '
                       f'{list(keys)}, found {found}')
      with archive.open(f'{key}.npy') as f:
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = reader(f)
  except DataUnavailableError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
    raise _problem(f'{path} is not a readable .npz file ({err})') from None
  where = f'{path}:{key}'
  if dtype != np.uint8:
    raise _problem(f'{where} has dtype {dtype}; expected uint8 pixels (0..255, no bit '
                   'reduction or scaling)')
  if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
    raise _problem(f'{where} has shape {shape}; expected [N, H, W] or [N, H, W, C] with C '
                   'in (1, 3)')
  if shape[0] == 0:
    raise _problem(f'{where} holds no images')
  return int(shape[0])


def _digits_grid_count(path: str, split: str) -> int:
  if split != 'test':
    raise _problem(f'the digits grid {path} has only the split \'test\', not {split!r}')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      width, height = image.size
  except OSError as err:
    raise _problem(f'digits grid {path} is unreadable ({err})') from None
  return (width // digits_grid.CELL) * (height // digits_grid.CELL)


_SPLIT_NAME = re.compile(r'[A-Za-z_][\w-]*')


def _tfds_count(spec: spec_lib.DataSpec, split: str) -> int | None:
  """The split's size from a prepared TFDS data set's info; None where it is not prepared
  (or TFDS cannot say without preparing it)."""
  builder_name = tfds_source.TFDS_BUILDERS.get(spec.name)
  if builder_name is None:
    return None
  split_arg = tfds_source.tfds_split(spec.name, split)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(builder_name, data_dir=spec.data_dir)
    if not builder.is_prepared():
      return None
    known = dict(builder.info.splits)
  except Exception:  # pylint: disable=broad-except
    return None   # TFDS cannot tell here; loading it reports what is wrong
  names = _SPLIT_NAME.findall(re.sub(r'\[[^\]]*\]', '', split_arg))
  missing = [n for n in names if n not in known]
  if missing:
    raise _problem(f'TFDS {builder_name!r} (prepared in {builder.data_dir}) has no split '
                   f'{missing[0]!r}; its splits: {", ".join(sorted(known))}')
  try:
    return int(builder.info.splits[split_arg].num_examples)
  except Exception:  # pylint: disable=broad-except
    return None
