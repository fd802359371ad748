"""Evaluation sets: `config.evals` blocks resolved to EvalDataset objects.

One block per set, keyed by the name its files take (workdir/eval/<key>_step<S>.npz):

  config.evals.mnist_test = eval_block('mnist', 'test')
  config.evals.mine = eval_block('npz', 'test', path='/data/mine.npz', max_examples=500)

A block holds `data` (the DataSpec fields that say where the images come from:
name, source, path, data_dir), `split`, and `max_examples`, `batch_size`,
`dequantization`, each None to take config.eval's default. Image size and
channels always come from config.data (the model's input shape) and evaluation
never augments. A set of the training data's own name reads from the same
source and path as the training data unless its block says otherwise.

Modules pass EvalDataset objects between them; the only text form is the
launcher's --add_eval flag (`parse_add_eval`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
from ml_collections import config_dict

from glow_ood.data.spec import DataSpec

BLOCK_KEYS = ('data', 'split', 'max_examples', 'batch_size', 'dequantization')
DATA_KEYS = ('name', 'source', 'path', 'data_dir')


@dataclasses.dataclass(frozen=True)
class EvalDataset:
  """One evaluation set with every default filled in."""
  key: str             # file prefix: eval/<key>_step<S>.npz
  data: DataSpec       # validated; the model's image shape, never augmented
  split: str
  max_examples: int    # 0 = the whole split
  subset_seed: int     # the images: first max_examples of the split shuffled by this seed
  batch_size: int      # images per batch, global
  dequantization: str  # 'uniform' | 'midpoint'

  @property
  def name(self) -> str:
    return self.data.name

  def replace(self, **changes) -> EvalDataset:
    return dataclasses.replace(self, **changes)


def eval_block(name: str, split: str = 'test', *, source: str = 'auto', path: str | None = None,
               data_dir: str | None = None, max_examples: int | None = None,
               batch_size: int | None = None,
               dequantization: str | None = None) -> ml_collections.ConfigDict:
  """A config.evals block; the None fields take config.eval's defaults."""
  block = ml_collections.ConfigDict()
  block.data = ml_collections.ConfigDict()
  block.data.name = name
  block.data.source = source
  block.data.path = _typed(path, str)
  block.data.data_dir = _typed(data_dir, str)
  block.split = split
  block.max_examples = _typed(max_examples, int)
  block.batch_size = _typed(batch_size, int)
  block.dequantization = _typed(dequantization, str)
  return block


def _typed(value, kind):
  # A None field keeps its type, so a --config override can still set it.
  return config_dict.placeholder(kind) if value is None else value


def default_key(name: str, split: str) -> str:
  return f'{name}_{split}'


def resolve_block(config, key: str, block) -> EvalDataset:
  """The EvalDataset of one block, raising ValueError with the block's config key on bad input.

  Values are checked here; the DataSpec they make is checked by the data package.
  """
  where = f'config.evals.{key}'
  given = dict(block)
  unknown = sorted(set(given) - set(BLOCK_KEYS))
  if unknown:
    raise ValueError(f'{where} has unknown key(s) {unknown}; an evaluation block holds '
                     f'{", ".join(BLOCK_KEYS)} (start from glow_ood.eval_sets.eval_block).')
  if 'data' not in given or 'split' not in given:
    raise ValueError(f'{where} needs data=dict(name=...) and split; use '
                     "glow_ood.eval_sets.eval_block(name, split).")
  data_fields = dict(given['data'])
  bad = sorted(set(data_fields) - set(DATA_KEYS))
  if bad:
    raise ValueError(f'{where}.data has unknown key(s) {bad}; allowed: {", ".join(DATA_KEYS)} '
                     '(image size and channels always come from config.data).')
  if 'name' not in data_fields:
    raise ValueError(f'{where}.data.name is missing: which data set to read.')
  fields = dict(config.data)
  fields.update(source='auto', path=None, augment='none')
  fields.update({k: v for k, v in data_fields.items() if v is not None})
  says_where = data_fields.get('source') not in (None, 'auto') or data_fields.get('path')
  if data_fields['name'] == config.data.name and not says_where:
    fields.update(source=config.data.source, path=config.data.path)
  if not isinstance(given['split'], str) or not given['split']:
    raise ValueError(f'{where}.split={given["split"]!r} is not valid: a split name, '
                     "e.g. 'test' or 'train[:1000]'.")
  defaults = config.eval
  pick = lambda name: given.get(name) if given.get(name) is not None else defaults[name]
  return EvalDataset(key=key, data=DataSpec(**fields), split=given['split'],
                     max_examples=pick('max_examples'), subset_seed=defaults.subset_seed,
                     batch_size=pick('batch_size'),
                     dequantization=pick('dequantization'))


def resolve(config, blocks=None) -> list[EvalDataset]:
  """EvalDatasets of config.evals (or of `blocks`, a mapping key -> block), in key order."""
  blocks = config.evals if blocks is None else blocks
  return [resolve_block(config, key, block) for key, block in blocks.items()]


def parse_add_eval(text: str) -> tuple[str, ml_collections.ConfigDict]:
  """The launcher's --add_eval value -> (key, block).

  '[KEY=]NAME:SPLIT' names a data set split (e.g. 'mnist:test'); '[KEY=]PATH.npz[:SPLIT]'
  reads an .npz file (split 'test' by default). KEY defaults to NAME_SPLIT, or to the
  file's name without .npz.
  """
  key, sep, spec = text.partition('=')
  if not sep or ':' in key or key.endswith('.npz'):
    key, spec = '', text
  spec = spec.strip()
  if '.npz' in spec:
    path, _, split = spec.partition('.npz')
    path += '.npz'
    split = split.lstrip(':') or 'test'
    key = key or os.path.splitext(os.path.basename(path))[0]
    return key, eval_block('npz', split, path=path)
  name, colon, split = spec.partition(':')
  if not colon or not name or not split:
    raise ValueError(f'--add_eval={text!r} is not valid: give NAME:SPLIT (e.g. mnist:test) or '
                     'the path of an .npz file (optionally KEY=... in front to name its files).')
  return key or default_key(name, split), eval_block(name, split)


def describe(eval_set: EvalDataset) -> dict[str, Any]:
  """The set as plain values, for logs and JSON."""
  return {'key': eval_set.key, 'name': eval_set.name, 'split': eval_set.split,
          'source': eval_set.data.source, 'path': eval_set.data.path,
          'max_examples': eval_set.max_examples, 'subset_seed': eval_set.subset_seed,
          'dequantization': eval_set.dequantization}
