"""Checks a config before any compute; every error names the key, the value and what is allowed."""

import dataclasses
import math
import re
from typing import Any, Iterable, Sequence

import ml_collections

# The config schema: every key a config may hold. Keys outside it are typos.
KNOWN_KEYS = {
    '': ('seed', 'n_bits', 'data', 'model', 'train', 'eval', 'scores', 'sample'),
    'data': ('name', 'source', 'path', 'data_dir', 'image_size', 'channels', 'augment'),
    'model': ('num_levels', 'steps_per_level', 'coupling', 'invconv', 'coupling_net',
              'hidden_channels', 'num_highway_blocks', 'learn_top_prior', 'recompute',
              'dtype'),
    'train': ('batch_size', 'num_steps', 'optimizer', 'learning_rate', 'warmup_steps',
              'grad_clip_norm', 'ema_decay', 'weight_decay', 'mutation_rate', 'log_every', 'eval_every', 'eval_examples',
              'checkpoint_every', 'keep_checkpoints'),
    'eval': ('datasets', 'batch_size', 'max_examples', 'dequantization', 'checkpoint_step',
             'use_ema'),
    'scores': ('enabled', 'fit_examples', 'reference_examples', 'compressors',
               'background_workdir', 'ensemble_workdirs'),
    'sample': ('temperatures', 'num'),
}

CHOICES = {
    'model.coupling': ('affine', 'additive'),
    'model.invconv': ('lu', 'plain'),
    'model.coupling_net': ('glow', 'highway'),
    'model.recompute': ('none', 'checkpoint', 'invertible'),
    'model.dtype': ('float32', 'bfloat16'),
    'train.optimizer': ('adam', 'adamax', 'rmsprop'),
    'eval.dequantization': ('uniform', 'midpoint'),
}

# Keys that were renamed: old key -> what to write instead.
RENAMED_KEYS = {
    'model.remat': "model.recompute ('none' | 'checkpoint' | 'invertible'; remat=True "
                   "was 'checkpoint')",
}

# Per-data-set overrides accepted inside eval.datasets entries.
EVAL_OVERRIDE_KEYS = ('source', 'path', 'data_dir', 'max_examples', 'batch_size',
                      'dequantization', 'tag')


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


@dataclasses.dataclass(frozen=True)
class EvalDataset:
  """One entry of eval.datasets, with the eval block's defaults filled in."""
  name: str
  split: str
  overrides: dict  # DataSpec fields to change (source, path, data_dir)
  max_examples: int
  batch_size: int
  dequantization: str
  tag: str         # output file prefix; defaults to name

  @property
  def key(self) -> str:
    return f'{self.tag}_{self.split}'


def _fail(key: str, value: Any, allowed: str) -> None:
  raise ConfigError(f'config.{key}={value!r} is not valid: {allowed}.')


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _require_int(config, key, low=None, high=None):
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, int):
    _fail(key, value, 'expected an integer')
  if (low is not None and value < low) or (high is not None and value > high):
    lo = '-inf' if low is None else low
    hi = 'inf' if high is None else high
    _fail(key, value, f'allowed range is {lo}..{hi}')
  return value


def _require_float(config, key, low=None, high=None, *, low_open=False, high_open=False):
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    _fail(key, value, 'expected a finite number')
  too_low = low is not None and (value <= low if low_open else value < low)
  too_high = high is not None and (value >= high if high_open else value > high)
  if too_low or too_high:
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    _fail(key, value, f'allowed range is {left}{low}, {high}{right}')
  return value


def _require_choice(config, key):
  value = _get(config, key)
  if value not in CHOICES[key]:
    _fail(key, value, 'choose one of ' + ', '.join(repr(c) for c in CHOICES[key]))
  return value


def _check_known_keys(config) -> None:
  for block, keys in KNOWN_KEYS.items():
    node = config if not block else config.get(block)
    if node is None:
      raise ConfigError(f'config.{block} is missing; every config needs the blocks '
                        f'{", ".join(k for k in KNOWN_KEYS if k)}.')
    unknown = sorted(set(node.keys()) - set(keys))
    if unknown:
      prefix = f'{block}.' if block else ''
      for key in unknown:
        if prefix + key in RENAMED_KEYS:
          raise ConfigError(f'config.{prefix}{key} was replaced by '
                            f'{RENAMED_KEYS[prefix + key]}.')
      raise ConfigError(f'Unknown config key(s) {", ".join(prefix + k for k in unknown)}; '
                        f'known keys in config.{block or "<top>"}: {", ".join(keys)}.')
    missing = sorted(set(keys) - set(node.keys()))
    if missing:
      prefix = f'{block}.' if block else ''
      raise ConfigError(f'Missing config key(s) {", ".join(prefix + k for k in missing)}; '
                        'start configs from configs/common.py:base_config().')


def _split_entries(text: str) -> list[str]:
  """Splits on commas that are not inside [...]."""
  entries, depth, current = [], 0, ''
  for char in text:
    if char == '[':
      depth += 1
    elif char == ']':
      depth -= 1
    if char == ',' and depth == 0:
      entries.append(current)
      current = ''
    else:
      current += char
  entries.append(current)
  return [e.strip() for e in entries if e.strip()]


_ENTRY = re.compile(r'^(?P<name>[A-Za-z0-9_]+):(?P<split>[A-Za-z0-9_\[\]:%+.-]+?)'
                    r'(\[(?P<options>[^\[\]]*)\])?$')


def parse_eval_datasets(config, datasets: str | Sequence[str] | None = None) -> list[EvalDataset]:
  """Parses 'name:split[key=value;...]' entries (comma string or list) against config.eval."""
  raw = config.eval.datasets if datasets is None else datasets
  entries = _split_entries(raw) if isinstance(raw, str) else [str(e).strip() for e in raw]
  if not entries:
    _fail('eval.datasets', raw, "give at least one 'name:split' entry")
  parsed = []
  for entry in entries:
    match = _ENTRY.match(entry)
    if not match:
      _fail('eval.datasets', entry,
            "each entry is 'name:split' optionally followed by [key=value;key=value], "
            "e.g. 'mnist:test[source=npz;path=/data/mnist.npz]'")
    options = {}
    for item in filter(None, (match['options'] or '').split(';')):
      key, sep, value = item.partition('=')
      key = key.strip()
      if not sep or key not in EVAL_OVERRIDE_KEYS:
        _fail('eval.datasets', entry,
              f'override {item!r} must be key=value with key one of {", ".join(EVAL_OVERRIDE_KEYS)}')
      options[key] = value.strip()
    try:
      max_examples = int(options.pop('max_examples', config.eval.max_examples))
      batch_size = int(options.pop('batch_size', config.eval.batch_size))
    except ValueError:
      _fail('eval.datasets', entry, 'max_examples and batch_size must be integers')
    dequantization = options.pop('dequantization', config.eval.dequantization)
    if dequantization not in CHOICES['eval.dequantization']:
      _fail('eval.datasets', entry,
            'dequantization must be one of ' + ', '.join(CHOICES['eval.dequantization']))
    tag = options.pop('tag', match['name'])
    parsed.append(EvalDataset(name=match['name'], split=match['split'], overrides=options,
                              max_examples=max_examples, batch_size=batch_size,
                              dequantization=dequantization, tag=tag))
  keys = [d.key for d in parsed]
  duplicates = sorted({k for k in keys if keys.count(k) > 1})
  if duplicates:
    _fail('eval.datasets', raw, f'entries {duplicates} would write the same file; add [tag=...]')
  return parsed


def _check_data_spec(config, key: str, fields: dict) -> None:
  """Runs the data package's own spec check, re-raised with the config key."""
  from glow_ood import data  # pylint: disable=g-import-not-at-top
  try:
    spec = data.DataSpec(**fields)
    data.validate_spec(spec)
  except (ValueError, TypeError) as e:
    message = str(e).replace('DataSpec.', f'config.{key}.')
    path = fields.get('path') or ''
    if path.endswith('.npz') and fields.get('name') != 'npz':
      message += (f" An .npz file is read as the set named 'npz'; name its output files with "
                  f"tag=, e.g. 'npz:test[path={path};tag={fields.get('name')}]'.")
    raise ConfigError(message) from e


def validate_config(config: ml_collections.ConfigDict, *, device_count: int,
                    check_data: bool = True) -> list[EvalDataset]:
  """Raises ConfigError (a ValueError) on the first bad value; returns the parsed eval sets.

  device_count is the global number of devices the batch is split over.
  """
  _check_known_keys(config)
  _require_int(config, 'seed')
  _require_int(config, 'n_bits', 1, 8)

  num_levels = _require_int(config, 'model.num_levels', 1)
  _require_int(config, 'model.steps_per_level', 1)
  _require_int(config, 'model.hidden_channels', 1)
  _require_int(config, 'model.num_highway_blocks', 1)
  for key in ('model.coupling', 'model.invconv', 'model.coupling_net', 'model.recompute',
              'model.dtype', 'train.optimizer', 'eval.dequantization'):
    _require_choice(config, key)
  if 'learn_top_prior' in config.model and not isinstance(config.model.learn_top_prior, bool):
    _fail('model.learn_top_prior', config.model.learn_top_prior, 'expected True or False')

  image_size = _require_int(config, 'data.image_size', 1)
  channels = _require_int(config, 'data.channels', 1)
  factor = 2 ** num_levels
  if image_size % factor:
    _fail('data.image_size', image_size,
          f'must be divisible by 2**model.num_levels = {factor} (model.num_levels={num_levels})')
  if channels not in (1, 3):
    _fail('data.channels', channels, 'allowed values are 1 (grey) and 3 (RGB)')

  batch_size = _require_int(config, 'train.batch_size', 1)
  if batch_size % device_count:
    _fail('train.batch_size', batch_size,
          f'must be divisible by the number of devices ({device_count})')
  _require_int(config, 'train.num_steps', 0)
  _require_float(config, 'train.learning_rate', 0, low_open=True)
  _require_int(config, 'train.warmup_steps', 0)
  _require_float(config, 'train.grad_clip_norm', 0)
  _require_float(config, 'train.ema_decay', 0, 1, high_open=True)
  _require_float(config, 'train.weight_decay', 0)
  _require_float(config, 'train.mutation_rate', 0, 1)
  _require_int(config, 'train.log_every', 1)
  _require_int(config, 'train.eval_every', 0)
  _require_int(config, 'train.eval_examples', 0)
  _require_int(config, 'train.checkpoint_every', 1)
  _require_int(config, 'train.keep_checkpoints', 1)

  _require_int(config, 'eval.batch_size', 1)
  _require_int(config, 'eval.max_examples', 0)
  _require_int(config, 'eval.checkpoint_step', -1)
  if not isinstance(config.eval.use_ema, bool):
    _fail('eval.use_ema', config.eval.use_ema, 'expected True or False')
  eval_sets = parse_eval_datasets(config)
  for eval_set in eval_sets:
    if eval_set.batch_size < 1 or eval_set.batch_size % device_count:
      _fail('eval.batch_size', eval_set.batch_size,
            f'must be positive and divisible by the number of devices ({device_count}) '
            f'(data set {eval_set.name}:{eval_set.split})')
    if eval_set.max_examples < 0:
      _fail('eval.max_examples', eval_set.max_examples, 'must be >= 0 (0 = whole split)')

  if not isinstance(config.scores.enabled, bool):
    _fail('scores.enabled', config.scores.enabled, 'expected True or False')
  _require_int(config, 'scores.fit_examples', 0)
  _require_int(config, 'scores.reference_examples', 0)
  for key in ('compressors', 'background_workdir', 'ensemble_workdirs'):
    if not isinstance(config.scores[key], str):
      _fail(f'scores.{key}', config.scores[key], 'expected a (comma-separated) string')

  temperatures = config.sample.temperatures
  if isinstance(temperatures, (int, float)):
    temperatures = (temperatures,)
  if (not isinstance(temperatures, Iterable) or not list(temperatures) or
      not all(isinstance(t, (int, float)) and 0 < t < math.inf for t in temperatures)):
    _fail('sample.temperatures', config.sample.temperatures,
          'expected a non-empty tuple of positive numbers, e.g. (0.7, 1.0)')
  _require_int(config, 'sample.num', 1)

  if check_data:
    _check_data_spec(config, 'data', dict(config.data))
    for eval_set in eval_sets:
      _check_data_spec(config, f'eval.datasets[{eval_set.name}:{eval_set.split}]',
                       data_fields_for(config, eval_set))
  return eval_sets


def data_fields_for(config, eval_set: EvalDataset) -> dict:
  """DataSpec fields for an evaluation set: same image shape as training, never augmented."""
  fields = dict(config.data)
  fields.update(name=eval_set.name, source='auto', path=None, data_dir=config.data.data_dir,
                augment='none')
  if eval_set.name == config.data.name:
    fields.update(source=config.data.source, path=config.data.path)
  fields.update(eval_set.overrides)
  return fields
