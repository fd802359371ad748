"""Choosing where a spec's images come from, and reading them preprocessed.

source='auto': an explicit `path` (or an offline-only name) means offline;
otherwise the standard offline copy is used if it exists and serves the split
(the digits grid serves only 'test'); otherwise TFDS.

Offline `path` kinds: a file ending in .npz (any name); a fonts dir
(notmnist_glyphs); a dir of IDX files (any grey name, e.g. mnist or
fashion_mnist); a digits-grid PNG (mnist).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from glow_ood.data import digits_grid
from glow_ood.data import errors
from glow_ood.data import glyphs
from glow_ood.data import idx
from glow_ood.data import npz
from glow_ood.data import preprocess
from glow_ood.data import spec as spec_lib
from glow_ood.data import tfds_source

STANDARD_OFFLINE_PATHS = {
    'fashion_mnist': errors.FASHION_MNIST_IDX_DIR,
    'mnist': errors.MNIST_DIGITS_PNG,
    'notmnist_glyphs': errors.FONTS_DIR,
}
OFFLINE_SPLITS = ('train', 'test')


def offline_path(spec: spec_lib.DataSpec) -> str | None:
  return spec.path if spec.path is not None else STANDARD_OFFLINE_PATHS.get(spec.name)


def _is_digits_grid(spec: spec_lib.DataSpec, path: str) -> bool:
  return spec.name == 'mnist' and not path.endswith('.npz') and not os.path.isdir(path)


def resolve_source(spec: spec_lib.DataSpec, split: str) -> str:
  """'offline' or 'tfds': where `split` of `spec` will be read from."""
  if spec.source != 'auto':
    return spec.source
  if spec.path is not None or spec.name in spec_lib.OFFLINE_ONLY_NAMES:
    return 'offline'
  path = STANDARD_OFFLINE_PATHS.get(spec.name)
  if path is None or not os.path.exists(path):
    return 'tfds'
  if _is_digits_grid(spec, path) and split != 'test':
    return 'tfds'
  return 'offline'


def read_offline(spec: spec_lib.DataSpec, split: str) -> np.ndarray:
  """Raw uint8 [N, H, W, C] images of a split from the spec's offline copy."""
  path = offline_path(spec)
  if split not in OFFLINE_SPLITS:
    raise ValueError(f'Offline sources have splits {OFFLINE_SPLITS}, not {split!r}.')
  if path is None:  # validate_spec rules this out; kept for direct callers
    raise errors.unavailable(f'{spec.name!r} has no standard offline copy.')
  if spec.name == 'npz' or path.endswith('.npz'):
    return npz.load_npz_images(path, split)
  if spec.name == 'notmnist_glyphs':
    return glyphs.render_glyphs(path, split)
  if os.path.isdir(path):
    return idx.load_idx_images(path, split)
  if not os.path.exists(path):
    raise errors.unavailable(f'Offline copy of {spec.name!r} not found: {path}', [path])
  if _is_digits_grid(spec, path):
    return digits_grid.load_digits_grid(path, split)
  raise errors.unavailable(
      f'Cannot read {spec.name!r} from {path}: expected a dir of IDX files or '
      'an .npz file.', [path])


def process_slice(num_examples: int, process_index: int, process_count: int) -> slice:
  """This process's contiguous, equal-size part of a split (remainder dropped).

  The one definition of per-process rows: the offline reader, TFDS's
  split_for_jax_process(drop_remainder=True) and parallel.host_slice agree with it.
  """
  per_process = num_examples // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def load_images(spec: spec_lib.DataSpec, split: str, *,
                max_examples: int | None = None, process_index: int = 0,
                process_count: int = 1, report: list[str] | None = None) -> np.ndarray:
  """Preprocessed uint8 [N, image_size, image_size, channels] images, in split order.

  With process_count > 1, only this process's part (process_slice) is read.
  report: if given, every resize, pad, crop or channel conversion is appended to it.
  """
  shape = functools.partial(preprocess.preprocess, name=spec.name,
                            image_size=spec.image_size, channels=spec.channels, report=report)
  if resolve_source(spec, split) == 'tfds':
    return tfds_source.load_tfds_images(
        spec.name, split, data_dir=spec.data_dir, preprocess=shape,
        max_examples=max_examples, process_index=process_index,
        process_count=process_count)
  raw = read_offline(spec, split)
  raw = raw[process_slice(len(raw), process_index, process_count)]
  if max_examples is not None:
    raw = raw[:max_examples]
  return shape(raw)
