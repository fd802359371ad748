"""The config a workdir was trained with, recorded in it as workdir/config.json.

Training writes it on first start; a resume compares the requested config with
it and stops, before touching a checkpoint, when a key that changes the state's
shapes or the optimizer differs. Evaluation and sampling can run from the
recorded config alone: this module is itself a config file for
`--config=<this file>:<workdir>`, which is what `glow_ood.main` passes when
`--config` is left out, so `--config.<key>=<value>` overrides apply to it with
the usual type checks.
"""

from __future__ import annotations

import json
import os

import ml_collections
from ml_collections import config_dict

from glow_ood import atomic_files
from glow_ood import config_blocks
from glow_ood import model_kinds
from glow_ood.configs import common
from glow_ood.user_errors import WorkdirError

CONFIG_FILE = 'config.json'

# Keys that fix the shapes or tree structure of the saved state: evaluating or
# resuming with another value cannot restore the checkpoint (the train block's are
# the fields config_blocks declares with role='state').
_STATE_KEYS = ('n_bits', 'data.image_size', 'data.channels') + config_blocks.recorded_keys(
    'state')
# Keys that fix the data and noise each step sees: resuming with another value
# would silently make a run that no uninterrupted run repeats (role='run'). The
# learning rate and warm-up may change on resume, e.g. to go on at a lower rate.
_RUN_KEYS = ('seed',) + config_blocks.recorded_keys('run')
# What a resumed run must keep (check_resume).
RESUME_KEYS = _STATE_KEYS + _RUN_KEYS


def execution_only_model_keys() -> tuple[str, ...]:
  """Model keys that change only how the step is executed, never the state: every
  registered kind's execution_only fields, and model.remat, which earlier configs recorded."""
  return ('model.remat',) + tuple(dict.fromkeys(
      f'model.{field}' for kind in model_kinds.KINDS.values() for field in kind.execution_only))


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def _flatten(config, prefix: str = '') -> dict[str, tuple[object, str | None]]:
  """{dotted key: (JSON value, type name kept where JSON loses it)}."""
  flat = {}
  for key, value in config.items():
    dotted = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flatten(value, dotted + '.'))
    elif value is None:
      field_type = config.get_type(key)
      flat[dotted] = (None, field_type.__name__ if field_type is not type(None) else None)
    elif isinstance(value, tuple):
      flat[dotted] = (list(value), 'tuple')
    else:
      flat[dotted] = (value, None)
  return flat


_TYPES = {'str': str, 'int': int, 'float': float, 'bool': bool}


def to_json(config: ml_collections.ConfigDict) -> str:
  flat = _flatten(config)
  document = {
      'config': json.loads(config.to_json()),
      # JSON has no tuples and no typed None: kept so a reloaded config takes the
      # same --config.<key> overrides as the original file.
      'types': {key: name for key, (_, name) in flat.items() if name is not None},
  }
  return json.dumps(document, indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  document = json.loads(text)
  types = document.get('types', {})

  def build(node, prefix):
    config = ml_collections.ConfigDict()
    for key, value in node.items():
      dotted = f'{prefix}{key}'
      if isinstance(value, dict):
        config[key] = build(value, dotted + '.')
      elif value is None and types.get(dotted) in _TYPES:
        config[key] = config_dict.placeholder(_TYPES[types[dotted]])
      elif types.get(dotted) == 'tuple':
        config[key] = tuple(value)
      else:
        config[key] = value
    return config
  return build(document['config'], '')


def load(workdir: str) -> ml_collections.ConfigDict | None:
  """The recorded config, or None when the workdir has none."""
  path = config_path(workdir)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return _with_later_defaults(from_json(f.read()))
  except (OSError, ValueError, KeyError) as error:
    raise WorkdirError(f'The recorded config {path} cannot be read ({error}). Restore it, or '
                       'pass --config=<the config file this run was trained with>.') from None


def _with_later_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config recorded by an earlier version gets the defaults of the keys added since
  (e.g. train.profile_steps), so its workdir keeps working; recorded values stay as they are."""
  defaults = common.base_config()
  if 'model' in config and 'kind' in config.model:
    defaults.model = common.model_block(config.model.kind)
  for block in ('train', 'eval', 'scores', 'sample', 'model'):
    if block not in config or not isinstance(config[block], ml_collections.ConfigDict):
      continue   # validation names a missing block
    with config.unlocked():
      for key in defaults[block].keys():
        if key not in config[block]:
          config[block][key] = defaults[block][key]
  return config


def get_config(workdir: str) -> ml_collections.ConfigDict:
  """config_flags entry point: `--config=<this file>:<workdir>`."""
  config = load(workdir)
  if config is None:
    raise WorkdirError(f'{workdir} has no recorded config ({CONFIG_FILE}); pass --config=.')
  return config


def prepare(workdir: str) -> None:
  """Creates workdir if missing; a clear error where it cannot be a workdir."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory. Choose a directory '
                       '(it is created if missing).')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f'--workdir={workdir} cannot be created ({error.strerror}). Choose a '
                       'directory you can write to.') from None


def check_usable(workdir: str) -> None:
  """prepare's checks without creating anything: a WorkdirError where workdir is a file or
  lies inside one."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory. Choose a directory '
                       '(it is created if missing).')
  parent = os.path.abspath(workdir)
  while not os.path.exists(parent) and os.path.dirname(parent) != parent:
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f'--workdir={workdir} cannot be created ({parent} is a file). Choose a '
                       'directory you can write to.')


def record(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json unless it exists (atomically: never half a file)."""
  path = config_path(workdir)
  if os.path.exists(path):
    return
  with atomic_files.atomic_write(path, 'w') as f:
    f.write(to_json(config) + '\n')


TRAINING_DATA_FILE = 'training_data.json'


def record_training_data(workdir: str, spec, split: str, report: list[str]) -> str:
  """Prints (when anything was done) and records in workdir/training_data.json what the
  training images went through to fit the model: each resize, pad, crop or channel
  conversion with the shapes before and after ('none' if none), as evaluation files
  record theirs. Rewritten (atomically) only when it changes. Returns the text."""
  preprocessing = '; '.join(dict.fromkeys(report)) or 'none'
  where = f', path={spec.path}' if spec.path else ''
  if report:
    print(f'Training images ({spec.name} {split!r}{where}) fitted to the model: '
          f'{preprocessing}', flush=True)
  text = json.dumps({'name': spec.name, 'split': split, 'source': spec.source,
                     'path': spec.path, 'data_dir': spec.data_dir,
                     'image_size': spec.image_size, 'channels': spec.channels,
                     'preprocessing': preprocessing}, indent=1, sort_keys=True) + '\n'
  path = os.path.join(workdir, TRAINING_DATA_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      unchanged = f.read() == text
  except OSError:
    unchanged = False
  if not unchanged:
    with atomic_files.atomic_write(path, 'w', encoding='utf-8') as f:
      f.write(text)
  return preprocessing


def _relevant(key: str, keys: tuple[str, ...]) -> bool:
  if key.startswith('model.'):
    return key not in execution_only_model_keys()
  return key in keys


def differences(recorded: ml_collections.ConfigDict, requested: ml_collections.ConfigDict,
                keys: tuple[str, ...]) -> list[tuple[str, object, object]]:
  """(key, recorded value, requested value) for every relevant key that differs."""
  old = {k: v for k, (v, _) in _flatten(recorded).items()}
  new = {k: v for k, (v, _) in _flatten(requested).items()}
  missing = object()
  diffs = []
  for key in sorted(set(old) | set(new)):
    if _relevant(key, keys) and old.get(key, missing) != new.get(key, missing):
      diffs.append((key, old.get(key, '(absent)'), new.get(key, '(absent)')))
  return diffs


def _check(config, workdir: str, keys: tuple[str, ...], what: str) -> None:
  recorded = load(workdir)
  if recorded is None:
    return
  diffs = differences(recorded, config, keys)
  if not diffs:
    return
  raise WorkdirError(
      f'{workdir} was trained with another config ({config_path(workdir)}); {what} would not '
      f'fit its checkpoints. Differing keys: {differences_text(diffs)}. Use a new --workdir '
      'for this config, or drop --config to use the recorded one (overrides such as '
      '--config.train.num_steps and --config.eval.* are fine).')


def differences_text(diffs, prefix: str = 'config.') -> str:
  """'config.n_bits: recorded 8, requested 5; ...' (one line)."""
  return '; '.join(f'{prefix}{key}: recorded {old!r}, requested {new!r}'
                   for key, old, new in diffs)


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises WorkdirError when resuming workdir's run with `config` would change it."""
  _check(config, workdir, RESUME_KEYS, 'training with it')


def check_restore(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises WorkdirError when workdir's checkpoints cannot be restored under `config`."""
  _check(config, workdir, _STATE_KEYS, 'restoring with it')
