"""Source resolution ('auto' / 'offline' / 'tfds') and missing offline copies."""

import gzip
import struct

import numpy as np
import pytest

from glow_ood.data import DataSpec
from glow_ood.data import DataUnavailableError
from glow_ood.data import load_array
from glow_ood.data import resolve_source
from glow_ood.data import sources


@pytest.fixture(name='standard_paths')
def fixture_standard_paths(tmp_path, monkeypatch):
  """Standard offline paths moved into tmp_path, so the tests are hermetic."""
  paths = {'fashion_mnist': str(tmp_path / 'fashion-mnist'),
           'mnist': str(tmp_path / 'digits.png'),
           'notmnist_glyphs': str(tmp_path / 'fonts')}
  monkeypatch.setattr(sources, 'STANDARD_OFFLINE_PATHS', paths)
  return paths


def write_idx_images(directory, stem, images):
  directory.mkdir(parents=True, exist_ok=True)
  header = bytes([0, 0, 8, 3]) + struct.pack('>3I', *images.shape)
  (directory / f'{stem}.gz').write_bytes(gzip.compress(header + images.tobytes()))


def test_auto_uses_offline_copy_when_present(tmp_path, standard_paths):
  spec = DataSpec('fashion_mnist')
  assert resolve_source(spec, 'train') == 'tfds'  # nothing installed yet
  images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
  write_idx_images(tmp_path / 'fashion-mnist', 't10k-images-idx3-ubyte', images)
  assert resolve_source(spec, 'test') == 'offline'
  loaded = load_array(spec, 'test')
  np.testing.assert_array_equal(loaded[:, 2:30, 2:30, 0], images)


def test_auto_digits_grid_serves_only_test(tmp_path, standard_paths):
  (tmp_path / 'digits.png').write_bytes(b'')
  assert resolve_source(DataSpec('mnist'), 'test') == 'offline'
  assert resolve_source(DataSpec('mnist'), 'train') == 'tfds'


def test_explicit_path_and_offline_only_names_are_offline(tmp_path):
  assert resolve_source(DataSpec('mnist', path=str(tmp_path)), 'train') == 'offline'
  assert resolve_source(DataSpec('notmnist_glyphs'), 'train') == 'offline'
  assert resolve_source(DataSpec('cifar10'), 'train') == 'tfds'
  assert resolve_source(DataSpec('mnist', source='tfds'), 'test') == 'tfds'


def test_mnist_from_a_dir_of_idx_files(tmp_path):
  images = np.full((3, 28, 28), 5, np.uint8)
  write_idx_images(tmp_path, 'train-images-idx3-ubyte', images)
  loaded = load_array(DataSpec('mnist', path=str(tmp_path), channels=3), 'train')
  assert loaded.shape == (3, 32, 32, 3) and loaded[:, 2:30, 2:30].min() == 5


@pytest.mark.parametrize('name', ['fashion_mnist', 'mnist'])
def test_missing_offline_copy_lists_the_options(tmp_path, name):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DataUnavailableError) as info:
    load_array(DataSpec(name, source='offline', path=str(empty)), 'test')
  message = str(info.value)
  assert str(empty) in message
  for expected in ('Offline options', 'apt-get install dataset-fashion-mnist',
                   'apt-get install opencv-doc', 'fonts-dejavu-core', '.npz'):
    assert expected in message


def test_missing_standard_copy_names_the_path(standard_paths):
  with pytest.raises(DataUnavailableError, match='fashion-mnist'):
    load_array(DataSpec('fashion_mnist', source='offline'), 'train')
  with pytest.raises(DataUnavailableError, match='digits.png'):
    load_array(DataSpec('mnist', source='offline'), 'test')
