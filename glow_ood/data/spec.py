"""DataSpec: which data set, from where, at what size; checked when it is constructed."""

from __future__ import annotations

import dataclasses
from typing import Any

DATASET_NAMES = ('fashion_mnist', 'mnist', 'cifar10', 'cifar100', 'svhn_cropped',
                 'celeb_a', 'imagenet32', 'notmnist_glyphs', 'npz')
SOURCES = ('auto', 'tfds', 'offline')
IMAGE_SIZES = (16, 28, 32, 64)
CHANNELS = (1, 3)
AUGMENTS = ('none', 'flip')

# Names with a TFDS builder (see tfds_source.TFDS_BUILDERS).
TFDS_NAMES = ('fashion_mnist', 'mnist', 'cifar10', 'cifar100', 'svhn_cropped',
              'celeb_a', 'imagenet32')
# Names with a standard offline copy that needs no `path`.
OFFLINE_DEFAULT_NAMES = ('fashion_mnist', 'mnist', 'notmnist_glyphs')
# Names that exist only offline.
OFFLINE_ONLY_NAMES = ('notmnist_glyphs', 'npz')


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What to load and how to shape it; all images come out uint8 [N, H, W, C].

  name: one of DATASET_NAMES.
  source: 'auto' reads `path` if given, else the standard offline copy if it
    exists and serves the split, else TFDS. 'tfds' or 'offline' force one.
  path: offline override: a dir of IDX files, digits.png, a fonts dir, or an
    .npz file (an .npz works for any name).
  data_dir: TFDS data_dir (e.g. a gs:// bucket on a TPU VM).
  image_size: output H = W. A source up to 4 px a side smaller is zero padded
    (28 -> 32); otherwise centre-cropped to a square and resized.
  channels: grey -> RGB repeats; RGB -> grey is ITU-R 601 luminance, rounded.
  augment: 'flip' flips left-right at random, in the training iterator only.
  """
  name: str
  source: str = 'auto'
  path: str | None = None
  data_dir: str | None = None
  image_size: int = 32
  channels: int = 1
  augment: str = 'none'

  def __post_init__(self):
    validate_spec(self)  # a DataSpec that exists is a valid one

  @classmethod
  def from_config(cls, cfg: Any) -> DataSpec:
    """Builds a validated spec from a ConfigDict (or mapping) with DataSpec's fields."""
    known = {field.name for field in dataclasses.fields(cls)}
    given = dict(cfg.items())
    unknown = sorted(set(given) - known)
    if unknown:
      raise ValueError(f'Unknown data config field(s) {unknown}; '
                       f'allowed fields are {sorted(known)}.')
    return cls(**given)


def _bad(field: str, value: Any, allowed: Any, why: str = '') -> ValueError:
  why = f' ({why})' if why else ''
  return ValueError(f'DataSpec.{field}={value!r} is not allowed{why}; '
                    f'allowed values: {allowed}.')


def validate_spec(spec: DataSpec) -> None:
  """Checks every field's value; touches no file and no network."""
  if spec.name not in DATASET_NAMES:
    raise _bad('name', spec.name, DATASET_NAMES)
  if spec.source not in SOURCES:
    raise _bad('source', spec.source, SOURCES)
  # bool is an int subclass; True would pass as channels=1 otherwise.
  if (isinstance(spec.image_size, bool) or not isinstance(spec.image_size, int)
      or spec.image_size not in IMAGE_SIZES):
    raise _bad('image_size', spec.image_size, IMAGE_SIZES)
  if (isinstance(spec.channels, bool) or not isinstance(spec.channels, int)
      or spec.channels not in CHANNELS):
    raise _bad('channels', spec.channels, CHANNELS)
  if spec.augment not in AUGMENTS:
    raise _bad('augment', spec.augment, AUGMENTS)
  for field in ('path', 'data_dir'):
    value = getattr(spec, field)
    if value is not None and (not isinstance(value, str) or not value):
      raise _bad(field, value, 'None or a non-empty string')

  if spec.source == 'tfds' and spec.name not in TFDS_NAMES:
    raise _bad('source', spec.source, ('auto', 'offline'),
               f'{spec.name!r} has no TFDS builder')
  if spec.name == 'npz' and spec.path is None:
    raise _bad('path', spec.path, 'the path of an .npz file',
               "name='npz' reads only from path")
  if (spec.source == 'offline' and spec.path is None
      and spec.name not in OFFLINE_DEFAULT_NAMES):
    raise _bad('path', spec.path, 'the path of an .npz file',
               f'{spec.name!r} has no standard offline copy; give path or use '
               "source='tfds'")
