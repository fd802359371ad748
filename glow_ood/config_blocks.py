"""The train, eval, scores and sample blocks of a config, each declared once as a dataclass.

A field's annotation is its type (a `typing.Literal` lists the allowed values), its
default is the config's default, and `setting(...)` adds its range, its place in
the recorded-config check and a one-line doc. From these come:

  block_config(TrainBlock)        the ConfigDict base_config() starts from
  keys(TrainBlock)                the keys config.train may hold
  parse(TrainBlock, config.train) the typed, validated block, or a ConfigError
                                  naming the key, the value and what is allowed
  recorded_keys('state')          the keys a checkpoint's state depends on

The data block is glow_ood.data.spec.DataSpec and the model block the chosen
kind's module fields (glow_ood.model_kinds): also dataclasses, declared where
they are used.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

import ml_collections

from glow_ood import likelihood
from glow_ood.user_errors import ConfigError

# How a field takes part in the recorded-config check (glow_ood.workdir_config):
#   'state': the checkpoint's arrays depend on it (restoring with another value fails);
#   'run':   resuming a training with another value would mix two runs.
ROLES = ('state', 'run')


def setting(default, doc: str, *, low=None, high=None, low_open: bool = False,
            high_open: bool = False, role: str | None = None, below_low: str | None = None):
  """A block field: its default, doc, allowed range and recorded-config role.

  below_low: the message for a value under `low`, where the range alone would not
  say what to do.
  """
  if role is not None and role not in ROLES:
    raise ValueError(f'role must be one of {ROLES}, got {role!r}')
  metadata = dict(doc=doc, low=low, high=high, low_open=low_open, high_open=high_open,
                  role=role, below_low=below_low)
  if isinstance(default, (list, dict)):
    raise TypeError('block defaults are immutable: use a tuple')
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainBlock:
  """config.train: the optimisation."""
  batch_size: int = setting(32, 'images per step, global (all devices and hosts)', low=1,
                            role='run')
  num_steps: int = setting(10_000, 'optimizer steps', low=1, below_low=(
      'a run trains at least one step; give the step to train to, e.g. '
      '--config.train.num_steps=1000'))
  optimizer: Literal['adam', 'adamax', 'rmsprop'] = setting('adam', 'the optax optimizer',
                                                            role='state')
  learning_rate: float = setting(1e-3, 'peak, reached after warm-up', low=0, low_open=True)
  warmup_steps: int = setting(0, 'linear warm-up from 0, in steps', low=0)
  grad_clip_norm: float = setting(100.0, 'global-norm clipping; 0 = off', low=0, role='state')
  ema_decay: float = setting(0.0, 'Polyak averaging of the params; 0 = off', low=0, high=1,
                             high_open=True, role='state')
  weight_decay: float = setting(
      0.0, 'L2: lambda * theta added to each trainable gradient before the optimizer (a loss '
      'penalty lambda/2 |theta|^2); 0 = off', low=0)
  mutation_rate: float = setting(
      0.0, 'fraction of training pixel values made uniform (a likelihood-ratio background '
      'model trains with 0.1-0.2, glow_ood.scores.mutation); 0 = off', low=0, high=1)
  log_every: int = setting(50, 'steps between train metrics', low=1)
  eval_every: int = setting(1_000, 'steps between test bits/dim and samples; 0 = off', low=0)
  eval_examples: int = setting(2_000, 'test images of the periodic evaluation; 0 = all', low=0)
  checkpoint_every: int = setting(1_000, 'steps between checkpoints', low=1)
  keep_checkpoints: int = setting(3, 'newest checkpoints kept', low=1)
  profile_steps: int = setting(
      0, 'steps of one jax.profiler trace from step 10 on, into workdir/plugins/profile; '
      '0 = off', low=0)


@dataclasses.dataclass(frozen=True)
class EvalBlock:
  """config.eval: the defaults of every evaluation set (glow_ood.eval_sets)."""
  batch_size: int = setting(256, 'images per batch, global', low=1)
  max_examples: int = setting(0, 'images per set; 0 = the whole split', low=0)
  subset_seed: int = setting(
      0, 'which images: a permutation of the whole split drawn from this seed, its first '
      'max_examples (stored orders are often sorted, e.g. digits by class)', low=0)
  dequantization: Literal[likelihood.DEQUANTIZATION_NOISE] = setting(
      'uniform', "'uniform' (u ~ U[0, 1)) or 'midpoint' (u = 1/2)")
  checkpoint_step: int = setting(-1, 'the checkpoint evaluated; -1 = the latest', low=-1)
  use_ema: bool = setting(True, 'the EMA params when train.ema_decay > 0')


@dataclasses.dataclass(frozen=True)
class ScoresBlock:
  """config.scores: the OOD scores of --mode=evaluate (glow_ood.score_files), one file per set
  beside its evaluation, eval/{key}_step{S}_scores.npz."""
  enabled: bool = setting(True, 'write the scores files')
  fit_examples: int = setting(2_000, 'training images the fitted scores see; 0 = all', low=0)
  reference_examples: int = setting(2_000, 'test images each set is compared with; 0 = all',
                                    low=0)
  compressors: str = setting('png,jpeg2000', 'input complexity, one score per compressor '
                             '(comma-separated)')
  background_workdir: str = setting(
      '', 'likelihood ratio: workdir of a background model of the same architecture '
      "(trained with train.mutation_rate > 0), e.g. a pair run's <model>_background; '' = off")
  ensemble_workdirs: str = setting('', 'WAIC: comma-separated workdirs of other seeds')


@dataclasses.dataclass(frozen=True)
class SampleBlock:
  """config.sample: the sample grids."""
  temperatures: tuple[float, ...] = setting((0.7, 1.0), 'std multipliers of the priors',
                                            low=0, low_open=True)
  num: int = setting(64, 'images per grid', low=1)


BLOCKS: dict[str, type] = {'train': TrainBlock, 'eval': EvalBlock, 'scores': ScoresBlock,
                           'sample': SampleBlock}


def keys(cls: type) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def doc(cls: type, name: str) -> str:
  return {f.name: f for f in dataclasses.fields(cls)}[name].metadata['doc']


def choices(cls: type, name: str) -> tuple | None:
  annotation = typing.get_type_hints(cls)[name]
  if typing.get_origin(annotation) is Literal:
    return typing.get_args(annotation)
  return None


def block_config(cls: type) -> ml_collections.ConfigDict:
  """The block's defaults as a ConfigDict (its field types fixed by the defaults)."""
  return ml_collections.ConfigDict({f.name: f.default for f in dataclasses.fields(cls)})


def recorded_keys(role: str) -> tuple[str, ...]:
  """'block.field' keys of every block whose recorded-config role is `role`."""
  return tuple(f'{block}.{f.name}' for block, cls in BLOCKS.items()
               for f in dataclasses.fields(cls) if f.metadata['role'] == role)


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
  raise ConfigError(f'config.{key}={value!r} is not valid: {allowed}.')


def parse(cls: type, node, block: str):
  """The block `node` (a ConfigDict or mapping holding exactly cls's keys) as a checked
  cls; raises ConfigError naming config.<block>.<field> for the first bad value."""
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    limits = {k: v for k, v in field.metadata.items() if k not in ('doc', 'role')}
    values[field.name] = check_value(f'{block}.{field.name}', node[field.name],
                                     hints[field.name], example=field.default, **limits)
  return cls(**values)


def check_value(key: str, value, annotation, *, low=None, high=None, low_open: bool = False,
                high_open: bool = False, below_low: str | None = None, example=None) -> Any:
  """One value checked against its type annotation (bool, int, float, str, a Literal, or
  tuple[float, ...]) and range; returns it (a tuple for a tuple annotation). Raises
  ConfigError naming config.<key>, the value and what is allowed."""
  limits = dict(low=low, high=high, low_open=low_open, high_open=high_open)
  if typing.get_origin(annotation) is Literal:
    allowed = typing.get_args(annotation)
    if value not in allowed:
      fail(key, value, 'choose one of ' + ', '.join(repr(c) for c in allowed))
    return value
  if annotation is bool:
    if not isinstance(value, bool):
      fail(key, value, 'expected True or False')
    return value
  if annotation is str:
    if not isinstance(value, str):
      fail(key, value, 'expected a string')
    return value
  if annotation is int:
    if isinstance(value, bool) or not isinstance(value, int):
      fail(key, value, 'expected an integer')
    if not _in_range(value, **limits):
      if below_low and value < low:
        fail(key, value, below_low)
      fail(key, value, f'allowed range is {"-inf" if low is None else low}..'
           f'{"inf" if high is None else high}')
    return value
  if annotation is float:
    if not _finite_number(value):
      fail(key, value, 'expected a finite number')
    if not _in_range(value, **limits):
      fail(key, value, f'allowed range is {_interval(**limits)}')
    return value
  if typing.get_origin(annotation) is tuple:  # tuple[float, ...]; one number is one value
    items = (value,) if _finite_number(value) else value
    if not (isinstance(items, (tuple, list)) and items and all(
        _finite_number(v) and _in_range(v, **limits) for v in items)):
      words = ('positive' if (low, low_open, high) == (0, True, None)
               else f'finite, in {_interval(**limits)},')
      fail(key, value, f'expected a non-empty tuple of {words} numbers, e.g. {example!r}')
    return tuple(float(v) for v in items)
  raise TypeError(f'config.{key}: no check for the annotation {annotation!r}')


def _finite_number(value) -> bool:
  return (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value))


def _in_range(value, *, low, high, low_open, high_open) -> bool:
  if low is not None and (value <= low if low_open else value < low):
    return False
  return high is None or (value < high if high_open else value <= high)


def _interval(*, low, high, low_open, high_open) -> str:
  return (f'{"(" if low_open else "["}{"-inf" if low is None else low}, '
          f'{"inf" if high is None else high}{")" if high_open else "]"}')
