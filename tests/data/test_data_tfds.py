"""The TFDS path under tfds.testing.mock_data: the mock's own pixels, shaped as
preprocess.py documents, and the training order built on them."""

import itertools

import numpy as np
from PIL import Image
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from glow_ood.data import DataSpec  # pylint: disable=g-import-not-at-top
from glow_ood.data import DataUnavailableError
from glow_ood.data import load_array
from glow_ood.data import tfds_source
from glow_ood.data import train_iterator

NUM_EXAMPLES = 12


@pytest.fixture(autouse=True)
def mocked_tfds():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


def _raw(name, split='test'):
  """The mock's images straight from tfds, [H, W, C] uint8 each, in order."""
  dataset = tfds.load(tfds_source.TFDS_BUILDERS[name], split=tfds_source.tfds_split(name, split),
                      shuffle_files=False)
  images = [example['image'] for example in tfds.as_numpy(dataset)]
  return [x[..., None] if x.ndim == 2 else x for x in images]


# What preprocess.py says, written out independently: centre crop, zero pad up to 4 px a
# side, box filter down, bilinear up; BT.601 luma for grey; grey repeated for RGB.

def _pil_resize(image, size):
  method = Image.Resampling.BOX if size < image.shape[0] else Image.Resampling.BILINEAR
  grey = image.shape[-1] == 1
  out = np.asarray(Image.fromarray(image[..., 0] if grey else image).resize((size, size), method))
  return out[..., None] if grey else out


def _square_then_resize(image, size):
  h, w, _ = image.shape
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  square = image[top:top + side, left:left + side]
  return square if side == size else _pil_resize(square, size)


def _pad_28_to_32(image):
  return np.pad(image, ((2, 2), (2, 2), (0, 0)))


def _luma(image):
  grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]


def _celeb_a(image):
  assert image.shape == (218, 178, 3)
  return _pil_resize(image[39:39 + 140, 19:19 + 140], 32)   # centre 140 x 140


@pytest.mark.parametrize('name, channels, image_size, expected', [
    ('mnist', 1, 32, _pad_28_to_32),
    ('mnist', 3, 32, lambda x: np.repeat(_pad_28_to_32(x), 3, axis=-1)),
    ('fashion_mnist', 1, 28, lambda x: x),
    ('cifar10', 1, 32, _luma),
    ('cifar10', 3, 32, lambda x: x),
    ('cifar100', 3, 16, lambda x: _pil_resize(x, 16)),
    ('svhn_cropped', 3, 32, lambda x: x),
    ('celeb_a', 3, 32, _celeb_a),
    # The mock's images have random sizes, smaller and larger: the per-image path.
    ('imagenet32', 3, 32, lambda x: _square_then_resize(x, 32)),
])
def test_mock_pixels_come_through_as_preprocess_says(name, channels, image_size, expected):
  raw = _raw(name)
  assert len(raw) == NUM_EXAMPLES
  images = load_array(DataSpec(name, source='tfds', channels=channels, image_size=image_size),
                      'test')
  assert images.dtype == np.uint8
  assert images.shape == (NUM_EXAMPLES, image_size, image_size, channels)
  for got, source in zip(images, raw):
    np.testing.assert_array_equal(got, expected(source))


@pytest.mark.parametrize('max_examples', [1, 5, NUM_EXAMPLES, 50])
def test_max_examples_is_the_first_images_of_the_split(max_examples):
  spec = DataSpec('mnist', source='tfds')
  first = load_array(spec, 'train', max_examples=max_examples)
  assert first.shape == (min(max_examples, NUM_EXAMPLES), 32, 32, 1)
  np.testing.assert_array_equal(first, load_array(spec, 'train')[:max_examples])
  # MNIST's 28 x 28 digits sit in the middle of the 32 x 32 frame.
  assert first[:, :2].max() == 0 and first[:, :, 30:].max() == 0


def test_auto_falls_back_to_tfds_for_colour_sets():
  images = load_array(DataSpec('svhn_cropped', channels=3), 'test')
  np.testing.assert_array_equal(images, np.stack(_raw('svhn_cropped')))


def _take(spec, steps, seed=0, start_step=0, batch_size=4):
  iterator = train_iterator(spec, 'train', batch_size=batch_size, seed=seed,
                            start_step=start_step, process_index=0, process_count=1)
  return list(itertools.islice(iterator, steps))


def _row_keys(images):
  return sorted(image.tobytes() for image in images)


def test_train_order_is_a_permutation_per_epoch_and_fixed_by_the_seed():
  spec = DataSpec('cifar10', source='tfds', channels=3)
  split = load_array(spec, 'train')
  assert len(set(_row_keys(split))) == NUM_EXAMPLES   # distinct images, so order is visible
  batches = _take(spec, 9)                             # 3 epochs of 3 batches of 4
  epochs = [np.concatenate(batches[i:i + 3]) for i in (0, 3, 6)]
  for epoch in epochs:
    # Each epoch shows every image of the split once, unchanged (no augmentation).
    assert _row_keys(epoch) == _row_keys(split)
  assert not np.array_equal(epochs[0], epochs[1])     # reshuffled every epoch
  assert not np.array_equal(epochs[0], split)         # and shuffled at all
  again = _take(spec, 9)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a, b)
  other_seed = np.concatenate(_take(spec, 3, seed=1))
  assert _row_keys(other_seed) == _row_keys(split)
  assert not np.array_equal(other_seed, epochs[0])


@pytest.mark.parametrize('start_step', [1, 3, 5])
def test_train_iterator_resumes_at_a_step(start_step):
  spec = DataSpec('cifar10', source='tfds', channels=1)
  uninterrupted = _take(spec, start_step + 4)
  resumed = _take(spec, 4, start_step=start_step)
  for a, b in zip(uninterrupted[start_step:], resumed):
    np.testing.assert_array_equal(a, b)


def test_flip_augmentation_mirrors_whole_images_and_is_reproducible():
  spec = DataSpec('cifar10', source='tfds', channels=3, augment='flip')
  plain = _take(DataSpec('cifar10', source='tfds', channels=3), 6)
  flipped = _take(spec, 6)
  num_flipped = 0
  for p, f in zip(np.concatenate(plain), np.concatenate(flipped)):
    if not np.array_equal(p, f):
      np.testing.assert_array_equal(f, p[:, ::-1])
      num_flipped += 1
  assert 0 < num_flipped < 24
  for a, b in zip(flipped, _take(spec, 6)):
    np.testing.assert_array_equal(a, b)


def test_each_process_asks_tfds_for_its_own_part(monkeypatch):
  # The mock serves the whole split whatever slice is asked for, so what is checked
  # is the request: TFDS's even split for this process, of the first max_examples.
  requested = []
  load = tfds.load

  def spy(name, *, split, **kwargs):
    requested.append(split)
    return load(name, split=split, **kwargs)
  monkeypatch.setattr(tfds, 'load', spy)
  batch = next(train_iterator(DataSpec('cifar10', source='tfds'), 'train',
                              batch_size=4, seed=0, process_index=1, process_count=2))
  assert batch.shape == (2, 32, 32, 1)
  assert requested == [tfds.split_for_jax_process('train', process_index=1, process_count=2,
                                                  drop_remainder=True)]
  requested.clear()
  tfds_source.load_tfds_images('imagenet32', 'test', data_dir=None,
                               preprocess=lambda x: x[:, :1, :1], max_examples=8,
                               process_index=0, process_count=4)
  assert requested == [tfds.split_for_jax_process('validation[:8]', process_index=0,
                                                  process_count=4, drop_remainder=True)]


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
