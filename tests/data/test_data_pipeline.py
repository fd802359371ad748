"""train_iterator / eval_batches / load_array on a small npz data set."""

import itertools

import numpy as np
import pytest

from glow_ood.data import DataSpec
from glow_ood.data import eval_batches
from glow_ood.data import load_array
from glow_ood.data import train_iterator

NUM_TRAIN = 50


@pytest.fixture(name='spec')
def fixture_spec(tmp_path):
  # Image i holds the value i in its top-left pixel (pad of 2 -> at [2, 2]) and
  # an asymmetric ramp so a left-right flip is visible.
  train = np.zeros((NUM_TRAIN, 28, 28), np.uint8)
  train[:, 0, 0] = np.arange(NUM_TRAIN)
  train[:, 5, :] = np.arange(28) + 100
  test = np.full((7, 28, 28), 3, np.uint8)
  path = tmp_path / 'toy.npz'
  np.savez(path, train=train, test=test)
  return DataSpec('npz', path=str(path))


def ids(batch):
  return batch[:, 2, 2, 0].astype(int)


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_shapes_and_epochs(spec):
  batches = take(train_iterator(spec, 'train', batch_size=8, seed=0,
                                process_index=0, process_count=1), 12)
  assert all(b.shape == (8, 32, 32, 1) and b.dtype == np.uint8 for b in batches)
  # 50 // 8 = 6 steps an epoch; each epoch draws 48 distinct images.
  for epoch in (batches[:6], batches[6:]):
    seen = np.concatenate([ids(b) for b in epoch])
    assert len(set(seen)) == 48
  assert not np.array_equal(ids(batches[0]), ids(batches[6]))  # reshuffled


def test_same_seed_same_stream_other_seed_differs(spec):
  def stream(seed):
    return np.stack(take(train_iterator(spec, 'train', batch_size=5, seed=seed,
                                        process_index=0, process_count=1), 15))
  np.testing.assert_array_equal(stream(3), stream(3))
  assert not np.array_equal(stream(3), stream(4))


@pytest.mark.parametrize('augment', ['none', 'flip'])
@pytest.mark.parametrize('start_step', [1, 9, 10, 23])
def test_resume_equals_tail_of_uninterrupted_stream(spec, augment, start_step):
  spec = DataSpec('npz', path=spec.path, augment=augment)
  kwargs = dict(batch_size=5, seed=7, process_index=0, process_count=1)
  full = take(train_iterator(spec, 'train', **kwargs), 30)
  resumed = take(train_iterator(spec, 'train', start_step=start_step, **kwargs),
                 30 - start_step)
  for a, b in zip(full[start_step:], resumed):
    np.testing.assert_array_equal(a, b)


def test_two_processes_read_disjoint_halves(spec):
  per_process = []
  for process_index in range(2):
    iterator = train_iterator(spec, 'train', batch_size=10, seed=0,
                              process_index=process_index, process_count=2)
    per_process.append(take(iterator, 5))  # 25 // 5 = 5 steps: one epoch
  for process_index, batches in enumerate(per_process):
    assert all(b.shape == (5, 32, 32, 1) for b in batches)
    seen = np.concatenate([ids(b) for b in batches])
    # Process p owns the contiguous images [25 p, 25 p + 25), each once an epoch.
    np.testing.assert_array_equal(np.sort(seen),
                                  np.arange(25) + 25 * process_index)
  for step in range(5):  # the global batch: disjoint halves
    global_ids = np.concatenate([ids(per_process[p][step]) for p in range(2)])
    assert len(set(global_ids)) == 10


def test_flip_only_in_training(spec):
  flip_spec = DataSpec('npz', path=spec.path, augment='flip')
  reference = load_array(spec, 'train')
  ramp = reference[0, 7, 2:30, 0]  # row 5 + pad 2
  batches = take(train_iterator(flip_spec, 'train', batch_size=10, seed=1,
                                process_index=0, process_count=1), 5)
  rows = np.concatenate([b[:, 7, 2:30, 0] for b in batches])
  flipped = np.all(rows == ramp[::-1], axis=1)
  kept = np.all(rows == ramp, axis=1)
  assert np.all(flipped | kept) and 10 < flipped.sum() < 40
  np.testing.assert_array_equal(load_array(flip_spec, 'train'), reference)
  evaluated = np.concatenate(list(eval_batches(flip_spec, 'train', batch_size=16)))
  np.testing.assert_array_equal(evaluated, reference)


def test_eval_batches_in_order_last_short(spec):
  batches = list(eval_batches(spec, 'train', batch_size=16, max_examples=40))
  assert [len(b) for b in batches] == [16, 16, 8]
  np.testing.assert_array_equal(np.concatenate([ids(b) for b in batches]),
                                np.arange(40))


def test_argument_errors(spec):
  with pytest.raises(ValueError, match='divisible'):
    train_iterator(spec, 'train', batch_size=5, seed=0, process_index=0,
                   process_count=2)
  with pytest.raises(ValueError, match='fewer than its batch'):
    train_iterator(spec, 'test', batch_size=8, seed=0, process_index=0,
                   process_count=1)
  with pytest.raises(ValueError, match='process_index'):
    train_iterator(spec, 'train', batch_size=4, seed=0, process_index=2,
                   process_count=2)
  with pytest.raises(ValueError, match='max_examples'):
    load_array(spec, 'train', max_examples=0)


def test_process_defaults_come_from_jax(spec):
  batch = next(train_iterator(spec, 'train', batch_size=4, seed=0))
  assert batch.shape == (4, 32, 32, 1)  # one process on this machine
