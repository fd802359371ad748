"""A real TFDS data set, prepared and read with no import mocked: fails when a module
TFDS needs at run time is missing from the install.

test_data_tfds.py runs under tfds.testing.mock_data, which never builds a data set, so
a module that TFDS imports only while preparing one (importlib_resources, imported when a
builder defined in a package looks up its checksums file) went missing from the
[train] extra unnoticed. Here a tiny builder defined in this module (so in a package,
as TFDS's own builders are) runs the whole download_and_prepare, and the project's
loader reads it back.

The loader, tfds_source.load_tfds_images, takes one of our data-set names and looks
its builder up in tfds_source.TFDS_BUILDERS; spec.py's name lists only gate DataSpec
validation, one level up (sources.load_images). The test registers its builder in
TFDS_BUILDERS (monkeypatch.setitem, undone afterwards) and calls load_tfds_images,
the lowest function that takes our name, so the same tfds.load, batching and
preprocessing run as for 'mnist'. Going through DataSpec would need the name in
three tuples of spec.py too and would test nothing more of TFDS.
"""

import functools

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from glow_ood.data import preprocess  # pylint: disable=g-import-not-at-top
from glow_ood.data import tfds_source

NAME = 'glow_ood_tiny_digits'  # both our name and the builder's (the class name in snake case)
SPLIT_SIZES = {'train': 5, 'test': 3}


def _image(index):
  """Example `index`'s 28 x 28 x 1 uint8 image: a ramp shifted by the index, all distinct."""
  return ((np.arange(28 * 28) + 37 * index) % 256).astype(np.uint8).reshape(28, 28, 1)


class GlowOodTinyDigits(tfds.core.GeneratorBasedBuilder):
  """5 train and 3 test grey 28 x 28 images; nothing to download."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, SPLIT_SIZES['train']),
            'test': self._generate_examples(SPLIT_SIZES['train'], SPLIT_SIZES['test'])}

  def _generate_examples(self, start, count):
    for index in range(start, start + count):
      yield index, {'image': _image(index), 'label': index % 10}


@pytest.fixture(scope='module')
def prepared_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  GlowOodTinyDigits(data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(tfds_source.TFDS_BUILDERS, NAME, NAME)


def _shape(image_size, channels):
  return functools.partial(preprocess.preprocess, name=NAME, image_size=image_size,
                           channels=channels)


def _raw_in_read_order(data_dir, split):
  """The split's images as tfds.load gives them (preparation shuffles by key hash)."""
  dataset = tfds.load(NAME, split=split, data_dir=data_dir, shuffle_files=False)
  return np.stack([example['image'] for example in tfds.as_numpy(dataset)])


@pytest.mark.parametrize('split', ['train', 'test'])
def test_prepared_split_loads_through_the_loader(prepared_dir, registered, split):
  del registered
  images = tfds_source.load_tfds_images(NAME, split, data_dir=prepared_dir,
                                        preprocess=_shape(32, 1))
  assert images.dtype == np.uint8 and images.shape == (SPLIT_SIZES[split], 32, 32, 1)
  raw = _raw_in_read_order(prepared_dir, split)
  start = 0 if split == 'train' else SPLIT_SIZES['train']
  expected = {_image(i).tobytes() for i in range(start, start + SPLIT_SIZES[split])}
  assert {x.tobytes() for x in raw} == expected  # every example, none from the other split
  np.testing.assert_array_equal(images, np.pad(raw, ((0, 0), (2, 2), (2, 2), (0, 0))))


def test_max_examples_and_channels(prepared_dir, registered):
  del registered
  images = tfds_source.load_tfds_images(NAME, 'train', data_dir=prepared_dir,
                                        preprocess=_shape(28, 3), max_examples=2)
  raw = _raw_in_read_order(prepared_dir, 'train')[:2]
  np.testing.assert_array_equal(images, np.repeat(raw, 3, axis=-1))


@pytest.mark.parametrize('name', sorted(tfds_source.TFDS_BUILDERS))
def test_real_builders_find_their_checksums(name):
  """download_and_prepare first reads the builder's checksums file, found from its code path
  (TFDS imports importlib_resources there); this needs no network."""
  builder = tfds.builder(tfds_source.TFDS_BUILDERS[name], data_dir='/nonexistent/unused')
  assert builder.code_path is not None
  assert builder.url_infos  # the URLs and checksums of the files it would download
