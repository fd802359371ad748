"""The TFDS path under tfds.testing.mock_data: shapes and dtypes after preprocessing."""

import itertools

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from glow_ood.data import DataSpec  # pylint: disable=g-import-not-at-top
from glow_ood.data import DataUnavailableError
from glow_ood.data import load_array
from glow_ood.data import tfds_source
from glow_ood.data import train_iterator


@pytest.fixture(autouse=True)
def mocked_tfds():
  with tfds.testing.mock_data(num_examples=12):
    yield


@pytest.mark.parametrize('name, channels, image_size', [
    ('mnist', 1, 32),            # 28 -> 32 by padding
    ('mnist', 3, 32),
    ('fashion_mnist', 1, 28),
    ('cifar10', 1, 32),          # RGB -> grey
    ('cifar10', 3, 32),
    ('cifar100', 3, 16),
    ('svhn_cropped', 3, 32),
    ('celeb_a', 3, 32),          # 218 x 178 -> crop 140 -> 32
    ('imagenet32', 3, 32),       # mock images have random sizes: per-image path
])
def test_load_array_and_train_iterator(name, channels, image_size):
  spec = DataSpec(name, source='tfds', channels=channels, image_size=image_size)
  images = load_array(spec, 'test')
  assert images.shape == (12, image_size, image_size, channels)
  assert images.dtype == np.uint8
  batches = list(itertools.islice(
      train_iterator(spec, 'train', batch_size=4, seed=0, process_index=0,
                     process_count=1), 4))
  assert all(b.shape == (4, image_size, image_size, channels) for b in batches)
  assert all(b.dtype == np.uint8 for b in batches)


def test_mnist_padding_and_max_examples():
  images = load_array(DataSpec('mnist', source='tfds'), 'train', max_examples=5)
  assert images.shape == (5, 32, 32, 1)
  assert images[:, :2].max() == 0 and images[:, :, 30:].max() == 0


def test_auto_falls_back_to_tfds_for_colour_sets():
  images = load_array(DataSpec('svhn_cropped', channels=3), 'test')
  assert images.shape == (12, 32, 32, 3)


def test_sharded_read_per_process():
  batch = next(train_iterator(DataSpec('cifar10', source='tfds'), 'train',
                              batch_size=4, seed=0, process_index=1, process_count=2))
  assert batch.shape == (2, 32, 32, 1)


def test_split_names():
  assert tfds_source.tfds_split('imagenet32', 'test') == 'validation'
  assert tfds_source.tfds_split('cifar10', 'test') == 'test'
  assert tfds_source.TFDS_BUILDERS['imagenet32'] == 'downsampled_imagenet/32x32'


def test_tfds_failure_is_unavailable_and_lists_options(monkeypatch):
  def no_network(*args, **kwargs):
    raise ConnectionError('Could not resolve host')
  monkeypatch.setattr(tfds, 'load', no_network)
  with pytest.raises(DataUnavailableError) as info:
    load_array(DataSpec('cifar10', source='tfds', data_dir='/no/such/dir'), 'test')
  message = str(info.value)
  for expected in ("'cifar10'", '/no/such/dir', 'Could not resolve host',
                   'Offline options', 'opencv-doc', 'dataset-fashion-mnist'):
    assert expected in message
