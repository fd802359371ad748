"""Checks a config before any compute; every error names the key, the value and what is allowed.

The schema is not written here: the data block's keys are DataSpec's fields,
the model block's are the chosen kind's module fields (glow_ood.model_kinds),
the evaluation blocks' are glow_ood.eval_sets'. Validation runs once, at the
entry point (the launcher, the experiment command, train_and_evaluate).
"""

import dataclasses
from typing import Literal

import ml_collections

from glow_ood import config_blocks
from glow_ood import eval_sets as eval_sets_lib
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood.data import spec as spec_lib
from glow_ood.user_errors import ConfigError  # raised here; callers also catch it by this name

TOP_KEYS = ('seed', 'n_bits', 'data', 'model', 'train', 'eval', 'evals', 'scores', 'sample')
# The keys of the blocks declared as dataclasses in glow_ood.config_blocks.
BLOCK_KEYS = {name: config_blocks.keys(cls) for name, cls in config_blocks.BLOCKS.items()}

# Keys that were renamed or replaced: old key -> what to write instead.
RENAMED_KEYS = {
    'model.remat': "config.model.recompute ('none' | 'checkpoint' | 'invertible'; remat=True "
                   "was 'checkpoint')",
    'eval.datasets': "config.evals, one block per set (glow_ood.eval_sets.eval_block), or "
                     "--add_eval=NAME:SPLIT / --add_eval=PATH.npz on the command line",
}


def data_keys() -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(spec_lib.DataSpec))


def known_keys(config, block: str) -> tuple[str, ...] | None:
  """The keys config.<block> may hold ('' = the top level); None for an unknown block."""
  if block == '':
    return TOP_KEYS
  if block == 'data':
    return data_keys()
  if block == 'model':
    if config is None:  # any kind's field
      return ('kind',) + tuple(dict.fromkeys(
          f for kind in model_kinds.KINDS.values() for f in kind.fields()))
    try:
      kind = model_kinds.kind_of(config.model)
    except ValueError:
      return ('kind',)
    return ('kind',) + tuple(kind.fields())
  return BLOCK_KEYS.get(block)


_fail = config_blocks.fail


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _check(config, key: str, annotation, **limits):
  """config.<key> checked against a type annotation and range (config_blocks.check_value)."""
  return config_blocks.check_value(key, _get(config, key), annotation, **limits)


def _check_keys(config, block: str) -> None:
  node = config if not block else config.get(block)
  keys = known_keys(config, block)
  prefix = f'{block}.' if block else ''
  if node is None:
    raise ConfigError(f'config.{block} is missing; every config needs the blocks '
                      f'{", ".join(k for k in TOP_KEYS if k not in ("seed", "n_bits"))}.')
  unknown = sorted(set(node.keys()) - set(keys))
  for key in unknown:
    if prefix + key in RENAMED_KEYS:
      raise ConfigError(f'config.{prefix}{key} was replaced by {RENAMED_KEYS[prefix + key]}.')
  if unknown and block == 'model':
    _unknown_model_keys(config, unknown)
  if unknown:
    raise ConfigError(f'Unknown config key(s) {", ".join(prefix + k for k in unknown)}; '
                      f'known keys in config.{block or "<top>"}: {", ".join(keys)}.')
  missing = sorted(set(keys) - set(node.keys()))
  if missing:
    raise ConfigError(f'Missing config key(s) {", ".join(prefix + k for k in missing)}; '
                      'start configs from glow_ood.configs.common.base_config().')


def _unknown_model_keys(config, unknown: list[str]) -> None:
  """Names the kind a stray model field belongs to, when it belongs to one."""
  kind = model_kinds.kind_of(config.model)
  for key in unknown:
    owners = [k.name for k in model_kinds.KINDS.values() if key in k.fields()]
    if owners:
      raise ConfigError(
          f'config.model.{key} is a field of model kind {owners[0]!r}, not of '
          f'{kind.name!r}; {kind.name} takes: {", ".join(kind.fields())}. To change the kind, '
          "start from that kind's config (glow_ood.configs.common.model_block).")


def _check_model(config) -> None:
  try:
    kind = model_kinds.kind_of(config.model)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  _check_keys(config, 'model')
  for name in kind.fields():
    key = f'model.{name}'
    choices = kind.choices(name)
    field_type = kind.field_type(name)
    if kind.optional(name) and _get(config, key) is None:
      continue
    if choices is not None:
      _check(config, key, Literal[choices])
    elif field_type in (bool, int, float, str):
      # Integers are sizes and counts; a float's range beyond finiteness is the module's check.
      _check(config, key, field_type, low=1 if field_type is int else None)


def _check_eval_sets(config, device_count: int) -> list[eval_sets_lib.EvalDataset]:
  if not isinstance(config.evals, ml_collections.ConfigDict) or not config.evals.keys():
    _fail('evals', config.evals, 'give at least one evaluation block, e.g. '
          "config.evals.fashion_mnist_test = eval_block('fashion_mnist', 'test')")
  return resolve_eval_sets(config, config.evals, device_count=device_count, where='evals')


def resolve_eval_sets(config, blocks, *, device_count: int,
                      where: str = 'evals') -> list[eval_sets_lib.EvalDataset]:
  """Resolves and checks evaluation blocks (config.evals or an experiment's) once."""
  resolved = []
  for key, block in blocks.items():
    try:
      eval_set = eval_sets_lib.resolve_block(config, key, block)
    except (ValueError, TypeError) as error:
      data = block.get('data') or {}
      raise ConfigError(_data_message(
          str(error).replace('config.evals.', f'config.{where}.'), f'{where}.{key}.data',
          data.get('name'), data.get('path'))) from None
    if eval_set.batch_size < 1 or eval_set.batch_size % device_count:
      _fail(f'{where}.{key}.batch_size', eval_set.batch_size,
            f'must be positive and divisible by the number of devices ({device_count})')
    if eval_set.max_examples < 0:
      _fail(f'{where}.{key}.max_examples', eval_set.max_examples, 'must be >= 0 (0 = whole split)')
    if eval_set.dequantization not in likelihood.DEQUANTIZATION_NOISE:
      _fail(f'{where}.{key}.dequantization', eval_set.dequantization,
            'choose one of ' + ', '.join(likelihood.DEQUANTIZATION_NOISE))
    resolved.append(eval_set)
  return resolved


def _data_message(message: str, key: str, name, path) -> str:
  """A DataSpec error (raised on construction) in the words of config.<key>."""
  message = message.replace('DataSpec.', f'config.{key}.')
  if str(path or '').endswith('.npz') and name != 'npz':
    message += (" An .npz file is read as the set named 'npz': data=dict(name='npz', "
                'path=...), or --add_eval=PATH.npz.')
  return message


def _data_spec(key: str, fields: dict) -> spec_lib.DataSpec:
  """The DataSpec of config.<key>; its own check re-raised with the config key."""
  try:
    return spec_lib.DataSpec(**fields)
  except (ValueError, TypeError) as error:
    raise ConfigError(_data_message(str(error), key, fields.get('name'),
                                    fields.get('path'))) from None


def validate_config(config: ml_collections.ConfigDict, *,
                    device_count: int) -> list[eval_sets_lib.EvalDataset]:
  """Raises ConfigError (a ValueError) on the first bad value; returns the evaluation sets.

  device_count is the global number of devices the batch is split over.
  """
  for block in ('', 'data', 'train', 'eval', 'scores', 'sample'):
    _check_keys(config, block)
  _check(config, 'seed', int)
  _check(config, 'n_bits', int, low=1, high=8)

  _check_model(config)
  image_size = _check(config, 'data.image_size', int, low=1)
  factor, why = model_kinds.kind_of(config.model).size_multiple(dict(config.model))
  if image_size % factor:
    _fail('data.image_size', image_size, f'must be divisible by {factor} for this model '
          f'({why}: {config.model.kind})')
  _data_spec('data', dict(config.data))

  blocks = {name: config_blocks.parse(cls, config[name], name)
            for name, cls in config_blocks.BLOCKS.items()}
  for block in ('train', 'eval'):
    if blocks[block].batch_size % device_count:
      _fail(f'{block}.batch_size', blocks[block].batch_size,
            f'must be divisible by the number of devices ({device_count})')
  return _check_eval_sets(config, device_count)


def check_available(spec, split: str, where: str) -> int | None:
  """Raises DataUnavailableError (one line, naming config.<where>) when `split` of `spec`
  cannot be read; returns its number of images (None where that is not known cheaply).

  Reads no images: headers, directory listings, a prepared TFDS data set's info
  (glow_ood.data.availability).
  """
  from glow_ood.data import availability  # pylint: disable=g-import-not-at-top
  from glow_ood.data.errors import DataUnavailableError  # pylint: disable=g-import-not-at-top
  try:
    return availability.check_split(spec, split)
  except DataUnavailableError as error:
    source = f', path={spec.path}' if spec.path else ''
    raise DataUnavailableError(
        f'config.{where} ({spec.name!r}{source}) cannot serve split {split!r}: {error}. Fix '
        f'config.{where} (name, path, source or data_dir) or the split, then rerun.') from None


def check_batch_fits(count: int | None, batch_size: int, key: str, spec, split: str, *,
                     process_count: int = 1) -> None:
  """Raises ConfigError when a training batch is larger than the images it is drawn from."""
  if count is None:
    return
  per_process, batch = count // process_count, batch_size // process_count
  if per_process < batch:
    where = f' ({spec.path})' if spec.path else ''
    spread = f', {per_process} per process' if process_count > 1 else ''
    _fail(key, batch_size, f'a training batch holds distinct images, and {spec.name!r} split '
          f'{split!r}{where} has only {count}{spread}: lower config.{key} to at most '
          f'{per_process * process_count}')


def check_training_data(config, *, prefix: str = '', process_count: int = 1) -> None:
  """The training split (its batch size against its size) and, with periodic evaluation,
  the test split of config.data; prefix names the config in a pair ('glow.')."""
  spec = spec_lib.DataSpec(**dict(config.data))
  count = check_available(spec, 'train', f'{prefix}data')
  check_batch_fits(count, config.train.batch_size, f'{prefix}train.batch_size', spec, 'train',
                   process_count=process_count)
  if config.train.eval_every:
    check_available(dataclasses.replace(spec, augment='none'), 'test', f'{prefix}data')


def check_eval_data(eval_sets, where) -> None:
  """Every evaluation set's split; where(eval_set) is its config key ('evals.<key>.data')."""
  for eval_set in eval_sets:
    check_available(eval_set.data, eval_set.split, where(eval_set))
