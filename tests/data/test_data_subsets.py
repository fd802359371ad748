"""Subsets are seeded shuffles over the whole split, not its first rows."""

import numpy as np
import pytest

from glow_ood import data
from glow_ood.data import DataSpec

NUM_CLASSES, PER_CLASS = 10, 100


@pytest.fixture(name='sorted_npz')
def fixture_sorted_npz(tmp_path):
  """1,000 28x28 images sorted by class (like the offline MNIST digits); pixel 0 = class."""
  labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
  images = np.zeros((labels.size, 28, 28), np.uint8)
  images[:, 0, 0] = labels
  images[:, 1, 1] = np.arange(labels.size) % 256  # tells rows of one class apart
  path = tmp_path / 'sorted.npz'
  np.savez(path, test=images)
  return DataSpec('npz', path=str(path), image_size=28, channels=1, augment='none')


def _classes(images):
  return images[:, 0, 0, 0].astype(int)


@pytest.mark.parametrize('seed', [0, 1, 7])
def test_subset_of_a_class_sorted_set_has_every_class_in_proportion(sorted_npz, seed):
  images, indices = data.load_subset(sorted_npz, 'test', max_examples=200, seed=seed)
  counts = np.bincount(_classes(images), minlength=NUM_CLASSES)
  # Hypergeometric: mean 20, sd sqrt(200 * 0.1 * 0.9 * 800 / 999) = 3.8; 4 sd either side.
  assert counts.min() >= 20 - 15 and counts.max() <= 20 + 15, counts
  # The first 200 stored rows would be two classes only: the check above can fail.
  first_rows = data.load_array(sorted_npz, 'test', max_examples=200)
  assert np.count_nonzero(np.bincount(_classes(first_rows), minlength=NUM_CLASSES)) == 2
  # The indices say which rows were taken, in the subset's order.
  everything = data.load_array(sorted_npz, 'test')
  np.testing.assert_array_equal(images, everything[indices])
  assert len(set(indices.tolist())) == 200


def test_batches_of_consecutive_subset_images_mix_classes(sorted_npz):
  """Batch typicality scores consecutive images: ten in a row must not be one class."""
  images, _ = data.load_subset(sorted_npz, 'test', max_examples=None, seed=0)
  batches = _classes(images).reshape(-1, 10)
  single_class = np.mean([len(set(b)) == 1 for b in batches])
  assert single_class < 0.05


def test_same_seed_same_indices_and_prefixes_nest(sorted_npz):
  _, a = data.load_subset(sorted_npz, 'test', max_examples=50, seed=3)
  _, b = data.load_subset(sorted_npz, 'test', max_examples=50, seed=3)
  _, c = data.load_subset(sorted_npz, 'test', max_examples=50, seed=4)
  _, big = data.load_subset(sorted_npz, 'test', max_examples=300, seed=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(big[:50], a)  # the curves' subset is inside the final one
  np.testing.assert_array_equal(
      data.load_array(sorted_npz, 'test', max_examples=50, subset_seed=3),
      data.load_array(sorted_npz, 'test')[a])


def test_subset_indices_errors():
  with pytest.raises(ValueError, match='non-negative integer'):
    data.subset_indices(10, 5, -1)
  with pytest.raises(ValueError, match='no images'):
    data.subset_indices(0, 5, 0)
  assert len(data.subset_indices(10, 20, 0)) == 10  # asking for more than there are: all
