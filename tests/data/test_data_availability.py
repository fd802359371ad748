"""Checking a split's presence and size without reading its images (glow_ood.data.availability):
the launcher and the experiment command call this before any compute."""

import gzip
import os
import struct

import numpy as np
from PIL import Image
import pytest

from glow_ood.data import availability
from glow_ood.data import spec as spec_lib
from glow_ood.data import tfds_source
from glow_ood.data.errors import DataUnavailableError


def _idx(path, num, size=28):
  header = struct.pack('>BBBB', 0, 0, 0x08, 3) + struct.pack('>3I', num, size, size)
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + bytes(num * size * size))


def _spec(**fields):
  return spec_lib.DataSpec(**dict({'name': 'fashion_mnist', 'source': 'offline'}, **fields))


def test_idx_counts_from_the_header_gzipped_or_not(tmp_path):
  _idx(str(tmp_path / 'train-images-idx3-ubyte.gz'), 7)
  _idx(str(tmp_path / 't10k-images-idx3-ubyte'), 3)
  spec = _spec(path=str(tmp_path))
  assert availability.check_split(spec, 'train') == 7
  assert availability.check_split(spec, 'test') == 3


def test_idx_missing_split_and_bad_header(tmp_path):
  _idx(str(tmp_path / 'train-images-idx3-ubyte.gz'), 7)
  spec = _spec(path=str(tmp_path))
  with pytest.raises(DataUnavailableError, match=r"no 'test' image IDX file in .*looked for "
                     r't10k-images-idx3-ubyte.gz'):
    availability.check_split(spec, 'test')
  with pytest.raises(DataUnavailableError, match="split 'validation' does not exist offline"):
    availability.check_split(spec, 'validation')
  (tmp_path / 't10k-images-idx3-ubyte').write_bytes(b'\x00\x00\x0d\x03' + bytes(12))
  with pytest.raises(DataUnavailableError, match='bad header'):
    availability.check_split(spec, 'test')
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'\x1f\x8b\x08\x00')
  with pytest.raises(DataUnavailableError, match='corrupt or truncated'):
    availability.check_split(spec, 'train')


def test_missing_directory(tmp_path):
  with pytest.raises(DataUnavailableError, match='does not exist'):
    availability.check_split(_spec(path=str(tmp_path / 'none')), 'train')


def test_npz_keys_dtype_shape_and_count(tmp_path):
  path = str(tmp_path / 'd.npz')
  np.savez(path, x_train=np.zeros((5, 8, 8), np.uint8), test=np.zeros((2, 8, 8, 3), np.uint8),
           floats=np.zeros((2, 8, 8), np.float32))
  spec = _spec(name='npz', path=path)
  assert availability.check_split(spec, 'train') == 5
  assert availability.check_split(spec, 'test') == 2
  np.savez(path, test=np.zeros((2, 8, 8), np.uint8), floats=np.zeros((2, 8, 8), np.float32))
  with pytest.raises(DataUnavailableError, match=r"no array for split 'train'.*found "
                     r"\['floats', 'test'\]"):
    availability.check_split(spec, 'train')
  np.savez(path, test=np.zeros((2, 8, 8), np.float32), train=np.zeros((0, 8, 8), np.uint8))
  with pytest.raises(DataUnavailableError, match=r'd.npz:test has dtype float32'):
    availability.check_split(spec, 'test')
  with pytest.raises(DataUnavailableError, match='holds no images'):
    availability.check_split(spec, 'train')
  np.savez(path, test=np.zeros((2, 8, 8, 2), np.uint8))
  with pytest.raises(DataUnavailableError, match=r'shape \(2, 8, 8, 2\)'):
    availability.check_split(spec, 'test')
  (tmp_path / 'bad.npz').write_bytes(b'not a zip')
  with pytest.raises(DataUnavailableError, match='not a readable .npz file'):
    availability.check_split(_spec(name='npz', path=str(tmp_path / 'bad.npz')), 'test')
  with pytest.raises(DataUnavailableError, match='npz file not found'):
    availability.check_split(_spec(name='npz', path=str(tmp_path / 'none.npz')), 'test')


def test_digits_grid_counts_cells_and_has_only_test(tmp_path):
  path = str(tmp_path / 'digits.png')
  Image.fromarray(np.zeros((200, 100), np.uint8)).save(path)
  spec = _spec(name='mnist', path=path)
  assert availability.check_split(spec, 'test') == 50
  with pytest.raises(DataUnavailableError, match="only the split 'test'"):
    availability.check_split(spec, 'train')


def test_glyphs_need_font_files(tmp_path):
  spec = _spec(name='notmnist_glyphs', path=str(tmp_path))
  with pytest.raises(DataUnavailableError, match='holds no font files'):
    availability.check_split(spec, 'train')
  (tmp_path / 'a.ttf').write_bytes(b'')
  assert availability.check_split(spec, 'train') is None


def test_nothing_is_read_beyond_the_header(tmp_path, monkeypatch):
  _idx(str(tmp_path / 'train-images-idx3-ubyte'), 1000)
  read = []
  original = open

  def counting_open(path, mode='r', *args, **kwargs):
    handle = original(path, mode, *args, **kwargs)
    if 'b' in mode:
      real_read = handle.read

      def tracked(size=-1):
        data = real_read(size)
        read.append(len(data))
        return data
      handle.read = tracked
    return handle
  monkeypatch.setattr('builtins.open', counting_open)
  assert availability.check_split(_spec(path=str(tmp_path)), 'train') == 1000
  assert sum(read) <= 64


tfds = pytest.importorskip('tensorflow_datasets')


@pytest.fixture(scope='module')
def prepared_dir(tmp_path_factory):
  # The tiny builder of the TFDS preparation test (registered once per process).
  from tests.data.test_data_tfds_prepare import GlowOodTinyDigits  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp('tfds_availability')
  GlowOodTinyDigits(data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)


def _register(monkeypatch, name):
  """The test builder as a data set name a DataSpec accepts, read through TFDS."""
  monkeypatch.setitem(tfds_source.TFDS_BUILDERS, name, name)
  monkeypatch.setattr(spec_lib, 'DATASET_NAMES', spec_lib.DATASET_NAMES + (name,))
  monkeypatch.setattr(spec_lib, 'TFDS_NAMES', spec_lib.TFDS_NAMES + (name,))


def test_prepared_tfds_splits_and_sizes(prepared_dir, monkeypatch):
  from tests.data.test_data_tfds_prepare import NAME, SPLIT_SIZES  # pylint: disable=g-import-not-at-top
  _register(monkeypatch, NAME)
  spec = spec_lib.DataSpec(name=NAME, source='tfds', data_dir=prepared_dir)
  assert availability.check_split(spec, 'train') == SPLIT_SIZES['train']
  assert availability.check_split(spec, 'test[:2]') == 2
  with pytest.raises(DataUnavailableError, match=r"has no split 'validation'; its splits: "
                     'test, train'):
    availability.check_split(spec, 'validation')


def test_unprepared_tfds_cannot_be_told(tmp_path, monkeypatch):
  from tests.data.test_data_tfds_prepare import NAME  # pylint: disable=g-import-not-at-top
  _register(monkeypatch, NAME)
  spec = spec_lib.DataSpec(name=NAME, source='tfds', data_dir=str(tmp_path))
  assert availability.check_split(spec, 'anything') is None
  assert os.listdir(tmp_path) == []   # nothing downloaded or prepared
