"""IDX reading: exact round trip of hand-made files, strict checks on corrupt ones."""

import gzip
import struct

import numpy as np
import pytest

from glow_ood.data import DataUnavailableError
from glow_ood.data import idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
  header = bytes([0, 0, type_code, array.ndim])
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(np.uint8).tobytes()


def write(path, payload: bytes, compress: bool):
  path.write_bytes(gzip.compress(payload) if compress else payload)
  return str(path)


IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


@pytest.mark.parametrize('compress', [False, True])
def test_reads_back_exactly(tmp_path, compress):
  path = write(tmp_path / 'train-images-idx3-ubyte', idx_bytes(IMAGES), compress)
  got = idx.read_idx(path)
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, IMAGES)


@pytest.mark.parametrize('compress', [False, True])
def test_load_idx_images_finds_split_files(tmp_path, compress):
  suffix = '.gz' if compress else ''
  write(tmp_path / f'train-images-idx3-ubyte{suffix}', idx_bytes(IMAGES), compress)
  write(tmp_path / f't10k-images-idx3-ubyte{suffix}', idx_bytes(IMAGES[:1] + 7), compress)
  np.testing.assert_array_equal(idx.load_idx_images(str(tmp_path), 'train'),
                                IMAGES[..., None])
  np.testing.assert_array_equal(idx.load_idx_images(str(tmp_path), 'test'),
                                IMAGES[:1, ..., None] + 7)


def test_bad_magic_names_the_file(tmp_path):
  path = write(tmp_path / 'bad-magic', idx_bytes(IMAGES, type_code=0x0D), False)
  with pytest.raises(DataUnavailableError, match='magic') as info:
    idx.read_idx(path)
  assert path in str(info.value)


@pytest.mark.parametrize('compress', [False, True])
def test_truncated_payload_names_the_file(tmp_path, compress):
  path = write(tmp_path / 'short', idx_bytes(IMAGES)[:-3], compress)
  with pytest.raises(DataUnavailableError, match='truncated') as info:
    idx.read_idx(path)
  assert path in str(info.value)


def test_truncated_gzip_stream_names_the_file(tmp_path):
  path = tmp_path / 'cut.gz'
  path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-10])
  with pytest.raises(DataUnavailableError) as info:
    idx.read_idx(str(path))
  assert str(path) in str(info.value)


def test_missing_split_file_lists_what_was_looked_for(tmp_path):
  with pytest.raises(DataUnavailableError) as info:
    idx.load_idx_images(str(tmp_path), 'test')
  assert 't10k-images-idx3-ubyte.gz' in str(info.value)
  assert 'dataset-fashion-mnist' in str(info.value)
