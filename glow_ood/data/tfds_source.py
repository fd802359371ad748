"""Reading images from TensorFlow Datasets into memory, preprocessed chunk by chunk.

imagenet32 is `downsampled_imagenet/32x32`: the 32 x 32 ImageNet of van den
Oord et al. (2016) that Glow and the OOD papers use (about 1.28M train and
50k validation images, no labels, no test split, so 'test' reads 'validation').
It needs no manual download in principle, but its download URL
(image-net.org/small) has been dead for years (tensorflow/datasets#4662):
prepare it once elsewhere and point data_dir at the prepared copy.
`imagenet_resized/32x32` (Chrabaszcz et al. 2017, box-resized, labelled) is a
different data set and is not used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from glow_ood.data.errors import unavailable

TFDS_BUILDERS = {
    'mnist': 'mnist',
    'fashion_mnist': 'fashion_mnist',
    'cifar10': 'cifar10',
    'cifar100': 'cifar100',
    'svhn_cropped': 'svhn_cropped',
    'celeb_a': 'celeb_a',
    'imagenet32': 'downsampled_imagenet/32x32',
}
# Our split name -> the builder's, where they differ.
TFDS_SPLITS = {'imagenet32': {'test': 'validation'}}

_CHUNK = 1024  # examples preprocessed at a time; bounds memory for big images


def tfds_split(name: str, split: str) -> str:
  """Our split name mapped to the builder's ('train'/'test'; others pass through)."""
  return TFDS_SPLITS.get(name, {}).get(split, split)


def load_tfds_images(name: str, split: str, *, data_dir: str | None,
                     preprocess: Callable[[np.ndarray], np.ndarray],
                     max_examples: int | None = None,
                     process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """All (or the first max_examples) preprocessed images of a split, in order.

  With process_count > 1 this reads only the process's contiguous, equal-size
  part of the split (tfds.split_for_jax_process with drop_remainder).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder_name = TFDS_BUILDERS[name]
  split_arg = tfds_split(name, split)
  if max_examples is not None:
    split_arg = f'{split_arg}[:{max_examples}]'
  if process_count > 1:
    split_arg = tfds.split_for_jax_process(
        split_arg, process_index=process_index, process_count=process_count,
        drop_remainder=True)
  try:
    dataset = tfds.load(builder_name, split=split_arg, data_dir=data_dir,
                        shuffle_files=False)
  except Exception as err:  # pylint: disable=broad-except
    # Download and preparation fail in many ways (no network, missing module,
    # dead URL); all mean the data set cannot be had here.
    raise unavailable(
        f'TFDS could not provide {builder_name!r} split {split_arg!r} '
        f'({type(err).__name__}: {err}).',
        [f'tfds name={builder_name!r} split={split_arg!r} '
         f'data_dir={data_dir or "~/tensorflow_datasets (default)"}']) from err

  images = dataset.map(lambda example: example['image'],
                       num_parallel_calls=tf.data.AUTOTUNE)
  if images.element_spec.shape.is_fully_defined():
    chunks = tfds.as_numpy(images.batch(_CHUNK).prefetch(2))
  else:  # sizes vary per image: preprocess one at a time
    chunks = (x[None] for x in tfds.as_numpy(images.prefetch(_CHUNK)))

  out = []
  for chunk in chunks:
    if chunk.ndim == 3:  # grey images without a channel axis
      chunk = chunk[..., None]
    out.append(preprocess(chunk))
    if max_examples is not None and sum(map(len, out)) >= max_examples:
      break  # mocks and some builders ignore slicing
  if not out:
    raise unavailable(f'TFDS {builder_name!r} split {split_arg!r} is empty.',
                      [f'tfds name={builder_name!r} data_dir={data_dir}'])
  result = np.concatenate(out)
  return result[:max_examples] if max_examples is not None else result
