"""Whole-split arrays, resumable training batches and evaluation batches.

Every split is held in host memory, preprocessed (uint8; 50k CIFAR-10 images
are 150 MB, imagenet32's train split about 3.9 GB in RGB).

Training order (exact, so a resumed run sees the same batches):
  * Process p of P holds the p-th contiguous 1/P of the split (N // P images,
    remainder dropped; TFDS reads only that part via split_for_jax_process).
  * It yields batches of b = batch_size // P images. Epoch e is the
    permutation of its part drawn from (seed, p, e); the epoch has
    (N // P) // b steps, the last partial batch dropped.
  * Step s is batch s mod steps_per_epoch of epoch s // steps_per_epoch, so
    start_step=k yields exactly what the uninterrupted iterator yields from k.
  * The global batch of step s is the concatenation over processes of their
    batches: disjoint, since the processes' parts are.
  * augment='flip' flips each image with probability 1/2, drawn from
    (seed, p, s); evaluation never augments.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from glow_ood.data import errors
from glow_ood.data import preprocess
from glow_ood.data import sources
from glow_ood.data import spec as spec_lib

# Tags keeping the permutation and flip random streams apart.
_PERMUTATION_STREAM = 0
_FLIP_STREAM = 1
_SUBSET_STREAM = 2


def _check_positive(name: str, value: int | None, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'{name} must be a positive integer, got {value!r}.')


def load_array(spec: spec_lib.DataSpec, split: str, *,
               max_examples: int | None = None,
               subset_seed: int | None = None,
               report: list[str] | None = None) -> np.ndarray:
  """uint8 [N, H, W, C] images of a split; never augmented.

  subset_seed None: the split in its stored order (or its first max_examples).
  subset_seed s: the rows subset_indices(split size, max_examples, s), a seeded
  shuffle over the whole split (see load_subset); every analysis subset uses this,
  because stored orders are often sorted (the offline MNIST digits by class).
  report: if given, every resize, pad, crop or channel conversion is appended to it.
  """
  if subset_seed is None:
    _check_positive('max_examples', max_examples, allow_none=True)
    return sources.load_images(spec, split, max_examples=max_examples, report=report)
  return load_subset(spec, split, max_examples=max_examples, seed=subset_seed,
                     report=report)[0]


def subset_indices(num_total: int, num: int | None, seed: int) -> np.ndarray:
  """The first `num` (None: all) of a permutation of range(num_total) drawn from `seed`.

  One permutation per (seed, split size): a smaller subset is the start of a larger
  one, so the checkpoint curves' images are among the final evaluation's.
  """
  if num_total < 1:
    raise ValueError('The split holds no images: nothing to draw a subset from.')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'subset_seed must be a non-negative integer, got {seed!r}.')
  permutation = np.random.default_rng([int(seed), _SUBSET_STREAM]).permutation(num_total)
  return permutation[:num] if num is not None else permutation


def load_subset(spec: spec_lib.DataSpec, split: str, *, max_examples: int | None,
                seed: int, report: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images [N, H, W, C], their row indices in the split [N]): a seeded random subset.

  The whole split is read (and preprocessed), then max_examples rows (None: all,
  shuffled) are taken in the order of a permutation drawn from `seed`.
  """
  _check_positive('max_examples', max_examples, allow_none=True)
  images = sources.load_images(spec, split, report=report)
  indices = subset_indices(len(images), max_examples, seed)
  return images[indices], indices


def epoch_permutation(seed: int, process_index: int, epoch: int,
                      num_examples: int) -> np.ndarray:
  rng = np.random.default_rng([seed, _PERMUTATION_STREAM, process_index, epoch])
  return rng.permutation(num_examples)


def _process_defaults(process_index: int | None,
                      process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return process_index, process_count


def train_iterator(spec: spec_lib.DataSpec, split: str, *, batch_size: int,
                   seed: int, start_step: int = 0, process_index: int | None = None,
                   process_count: int | None = None,
                   report: list[str] | None = None) -> Iterator[np.ndarray]:
  """Endless shuffled batches, uint8 [batch_size // process_count, H, W, C].

  batch_size is the global batch; this process gets its share. Resumable:
  start_step=k yields exactly the batches from step k on (see module doc).
  The data are read before this returns, so a missing data set raises here.
  report: if given, every resize, pad, crop or channel conversion is appended to it.
  """
  process_index, process_count = _process_defaults(process_index, process_count)
  _check_positive('batch_size', batch_size)
  _check_positive('process_count', process_count)
  if batch_size % process_count:
    raise ValueError(f'batch_size={batch_size} is not divisible by '
                     f'process_count={process_count}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count}).')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}.')
  if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) \
      or start_step < 0:
    raise ValueError(f'start_step must be a non-negative integer, got {start_step!r}.')

  images = sources.load_images(spec, split, process_index=process_index,
                               process_count=process_count, report=report)
  local_batch = batch_size // process_count
  steps_per_epoch = len(images) // local_batch
  if steps_per_epoch == 0:
    raise errors.TooFewImagesError(
        f'{spec.name!r} split {split!r} has {len(images)} images for process '
        f'{process_index}, fewer than its batch of {local_batch}: lower the batch size '
        '(config.train.batch_size) or train on more images.')
  return _batches(images, local_batch, steps_per_epoch, int(seed), int(start_step),
                  process_index, flip=spec.augment == 'flip')


def _batches(images: np.ndarray, batch: int, steps_per_epoch: int, seed: int,
             start_step: int, process_index: int, flip: bool) -> Iterator[np.ndarray]:
  step, epoch, permutation = start_step, None, None
  while True:
    step_epoch, index = divmod(step, steps_per_epoch)
    if step_epoch != epoch:
      epoch = step_epoch
      permutation = epoch_permutation(seed, process_index, epoch, len(images))
    x_BxHxWxC = images[permutation[index * batch:(index + 1) * batch]]
    if flip:
      rng = np.random.default_rng([seed, _FLIP_STREAM, process_index, step])
      x_BxHxWxC = preprocess.random_flip(x_BxHxWxC, rng)
    yield x_BxHxWxC
    step += 1


def eval_batches(spec: spec_lib.DataSpec, split: str, *, batch_size: int,
                 max_examples: int | None = None) -> Iterator[np.ndarray]:
  """The split in order, unshuffled and never augmented; the last batch may be short."""
  _check_positive('batch_size', batch_size)
  images = load_array(spec, split, max_examples=max_examples)
  return (images[start:start + batch_size]
          for start in range(0, len(images), batch_size))
