"""IDX files (the MNIST / FashionMNIST format), plain or gzipped, checked strictly.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the values in C order. Only uint8 data (code 0x08)
is image data here.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from glow_ood.data.errors import unavailable

UINT8_CODE = 0x08
GZIP_MAGIC = b'\x1f\x8b'

# File stems per split; MNIST mirrors also ship 'train-images.idx3-ubyte'.
IMAGE_STEMS = {
    'train': ('train-images-idx3-ubyte', 'train-images.idx3-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-images.idx3-ubyte'),
}


def read_idx(path: str) -> np.ndarray:
  """Reads one uint8 IDX file; a bad magic, dims or size raises DataUnavailableError."""
  try:
    with open(path, 'rb') as f:
      raw = f.read()
    if raw[:2] == GZIP_MAGIC:
      raw = gzip.decompress(raw)
  except FileNotFoundError as err:
    raise unavailable(f'IDX file not found: {path}', [path]) from err
  except (OSError, EOFError, zlib.error) as err:
    raise unavailable(f'IDX file {path} is corrupt or truncated ({err}).',
                      [path]) from err

  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UINT8_CODE:
    raise unavailable(
        f'IDX file {path} has a bad magic number {raw[:4].hex()!r}; expected '
        f'0000{UINT8_CODE:02x}<ndim> (uint8 data).', [path])
  ndim = raw[3]
  header_size = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header_size:
    raise unavailable(f'IDX file {path} has a bad header (ndim={ndim}, '
                      f'{len(raw)} bytes).', [path])
  dims = struct.unpack(f'>{ndim}I', raw[4:header_size])
  expected = header_size + int(np.prod(dims, dtype=np.int64))
  if len(raw) != expected:
    raise unavailable(
        f'IDX file {path} holds {len(raw)} bytes but its header {dims} '
        f'implies {expected}: truncated or corrupt.', [path])
  return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def find_images_file(directory: str, split: str) -> str:
  """The image IDX file of a split in a directory, gzipped or not."""
  candidates = [os.path.join(directory, stem + suffix)
                for stem in IMAGE_STEMS[split] for suffix in ('.gz', '')]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise unavailable(f'No {split!r} image IDX file in {directory}.', candidates)


def load_idx_images(directory: str, split: str) -> np.ndarray:
  """uint8 [N, H, W, 1] images of a split from a directory of IDX files."""
  path = find_images_file(directory, split)
  images = read_idx(path)
  if images.ndim != 3:
    raise unavailable(f'IDX file {path} has shape {images.shape}; expected '
                      '[N, H, W] images.', [path])
  return images[..., None]
