"""npz source: good files load as NHWC uint8; bad dtype or shape is a clear error."""

import numpy as np
import pytest

from glow_ood.data import DataSpec
from glow_ood.data import DataUnavailableError
from glow_ood.data import load_array
from glow_ood.data import npz


def test_nhw_and_nhwc_load(tmp_path):
  path = str(tmp_path / 'd.npz')
  train = np.arange(2 * 32 * 32, dtype=np.uint8).reshape(2, 32, 32)
  test = np.full((3, 32, 32, 3), 9, np.uint8)
  np.savez(path, train=train, test=test)
  np.testing.assert_array_equal(npz.load_npz_images(path, 'train'), train[..., None])
  np.testing.assert_array_equal(npz.load_npz_images(path, 'test'), test)
  rgb = load_array(DataSpec('npz', path=path, channels=3), 'train')
  assert rgb.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(rgb[..., 1], train)


def test_x_prefixed_keys_and_any_name(tmp_path):
  path = str(tmp_path / 'cifar.npz')
  np.savez(path, x_train=np.zeros((4, 32, 32, 3), np.uint8),
           x_test=np.ones((5, 32, 32, 3), np.uint8))
  images = load_array(DataSpec('cifar10', path=path, channels=3), 'test')
  assert images.shape == (5, 32, 32, 3) and images.min() == 1


@pytest.mark.parametrize('array, message', [
    (np.zeros((2, 8, 8), np.float32), 'dtype float32'),
    (np.zeros((2, 8), np.uint8), 'shape'),
    (np.zeros((2, 8, 8, 2), np.uint8), 'shape'),
])
def test_bad_arrays_are_unavailable(tmp_path, array, message):
  path = str(tmp_path / 'bad.npz')
  np.savez(path, train=array)
  with pytest.raises(DataUnavailableError, match=message) as info:
    npz.load_npz_images(path, 'train')
  assert path in str(info.value)


def test_missing_key_and_not_a_zip(tmp_path):
  path = str(tmp_path / 'only_train.npz')
  np.savez(path, train=np.zeros((1, 4, 4), np.uint8))
  with pytest.raises(DataUnavailableError, match='x_test'):
    npz.load_npz_images(path, 'test')
  junk = tmp_path / 'junk.npz'
  junk.write_bytes(b'not a zip')
  with pytest.raises(DataUnavailableError, match='junk.npz'):
    npz.load_npz_images(str(junk), 'train')
