"""The train/eval/scores/sample blocks: declared once as dataclasses, everything else derived."""
import dataclasses
from typing import Literal

import pytest

from glow_ood import config_blocks
from glow_ood import config_validation
from glow_ood import likelihood
from glow_ood import workdir_config
from glow_ood.configs import common
from glow_ood.user_errors import ConfigError


@pytest.mark.parametrize('name', sorted(config_blocks.BLOCKS))
def test_base_config_blocks_are_the_dataclass_defaults(name):
  cls = config_blocks.BLOCKS[name]
  block = common.base_config()[name]
  assert set(block.keys()) == set(config_blocks.keys(cls))
  assert config_blocks.keys(cls) == config_validation.BLOCK_KEYS[name]
  parsed = config_blocks.parse(cls, block, name)
  assert parsed == cls()  # every default passes its own check
  for field in dataclasses.fields(cls):
    assert field.metadata['doc'].strip(), f'config.{name}.{field.name} has no doc'


def test_parse_returns_the_typed_block():
  block = common.base_config().train
  block.batch_size = 8
  block.learning_rate = 2  # an int where a float is expected is a number
  parsed = config_blocks.parse(config_blocks.TrainBlock, block, 'train')
  assert isinstance(parsed, config_blocks.TrainBlock)
  assert (parsed.batch_size, parsed.learning_rate, parsed.optimizer) == (8, 2, 'adam')
  with pytest.raises(dataclasses.FrozenInstanceError):
    parsed.batch_size = 4
  sample = common.base_config().sample
  with sample.ignore_type():
    sample.temperatures = 0.5  # one number is one temperature
  assert config_blocks.parse(config_blocks.SampleBlock, sample, 'sample').temperatures == (0.5,)


@pytest.mark.parametrize('block, key, value, message', [
    ('train', 'batch_size', 0, r'config\.train\.batch_size=0 is not valid: allowed range is 1\.\.inf\.'),
    ('train', 'batch_size', True, r'batch_size=True .*expected an integer'),
    ('train', 'batch_size', 2.0, r'batch_size=2\.0 .*expected an integer'),
    ('train', 'num_steps', 0, r'num_steps=0 .*at least one step.*--config\.train\.num_steps'),
    ('train', 'learning_rate', 0.0, r'learning_rate=0\.0 .*\(0, inf\]'),
    ('train', 'learning_rate', float('nan'), r'learning_rate=nan .*finite number'),
    ('train', 'ema_decay', 1.0, r'ema_decay=1\.0 .*\[0, 1\)'),
    ('train', 'mutation_rate', 1.5, r'mutation_rate=1\.5 .*\[0, 1\]'),
    ('train', 'optimizer', 'sgd', r"optimizer='sgd' .*choose one of 'adam', 'adamax', 'rmsprop'"),
    ('eval', 'checkpoint_step', -2, r'checkpoint_step=-2 .*-1\.\.inf'),
    ('eval', 'use_ema', 1, r'use_ema=1 .*True or False'),
    ('eval', 'dequantization', 'gauss', r"dequantization='gauss' .*'uniform', 'midpoint'"),
    ('scores', 'compressors', 3, r'compressors=3 .*expected a string'),
    ('sample', 'temperatures', (0.7, 0.0), r'temperatures=\(0\.7, 0\.0\) .*positive numbers, '
     r'e\.g\. \(0\.7, 1\.0\)'),
    ('sample', 'temperatures', (), r'temperatures=\(\) .*non-empty'),
])
def test_bad_values_name_key_value_and_allowed(block, key, value, message):
  config = common.base_config()
  with config[block].ignore_type():
    config[block][key] = value
  with pytest.raises(ConfigError, match=message):
    config_blocks.parse(config_blocks.BLOCKS[block], config[block], block)
  with pytest.raises(ConfigError, match=message):  # the entry point's check says the same
    config_validation.validate_config(config, device_count=1)


def test_range_edges_are_as_declared():
  check = config_blocks.check_value
  assert check('k', 0, int, low=0) == 0
  assert check('k', 8, int, low=1, high=8) == 8
  with pytest.raises(ConfigError, match=r'config\.k=9 .*1\.\.8'):
    check('k', 9, int, low=1, high=8)
  assert check('k', 0.0, float, low=0, high=1, high_open=True) == 0.0
  with pytest.raises(ConfigError, match=r'\(0, 1\]'):
    check('k', 0.0, float, low=0, high=1, low_open=True)
  assert check('k', 'b', Literal['a', 'b']) == 'b'
  with pytest.raises(TypeError, match='no check'):
    check('k', {}, dict)


def test_literal_of_dequantization_is_the_likelihoods():
  assert config_blocks.choices(config_blocks.EvalBlock, 'dequantization') == (
      likelihood.DEQUANTIZATION_NOISE)
  assert config_blocks.choices(config_blocks.TrainBlock, 'batch_size') is None


def test_recorded_config_keys_come_from_the_roles():
  assert set(config_blocks.recorded_keys('state')) == {
      'train.optimizer', 'train.grad_clip_norm', 'train.ema_decay'}
  assert config_blocks.recorded_keys('run') == ('train.batch_size',)
  assert set(config_blocks.recorded_keys('state')) <= set(workdir_config.RESUME_KEYS)
  assert 'train.batch_size' in workdir_config.RESUME_KEYS
  assert 'train.learning_rate' not in workdir_config.RESUME_KEYS  # may change on resume


def test_a_field_added_to_a_block_reaches_config_keys_and_checks():
  @dataclasses.dataclass(frozen=True)
  class Block:
    steps: int = config_blocks.setting(3, 'steps', low=1)
    mode: Literal['a', 'b'] = config_blocks.setting('a', 'mode', role='run')

  block = config_blocks.block_config(Block)
  assert block.to_dict() == {'steps': 3, 'mode': 'a'}
  block.mode = 'c'
  with pytest.raises(ConfigError, match=r"config\.x\.mode='c' .*'a', 'b'"):
    config_blocks.parse(Block, block, 'x')
  with pytest.raises(ValueError, match='role'):
    config_blocks.setting(1, 'doc', role='resume')
  with pytest.raises(TypeError, match='immutable'):
    config_blocks.setting([1], 'doc')
