"""Bad configs fail before any compute with a message naming the key; missing data and a
non-finite loss fail clearly too."""

import dataclasses
import importlib
import json
import os
import subprocess
import sys

import pytest

from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood import eval_sets
from glow_ood import flows
from glow_ood import model_kinds
from glow_ood.configs import tiny
from glow_ood import main as main_lib
from glow_ood import train
from glow_ood.data import DataUnavailableError
from tests.training.conftest import REPO_ROOT, TINY_CONFIG, load_checkpoint, subprocess_env


def _set(config, dotted, value):
  block, _, key = dotted.rpartition('.')
  node = config
  for part in filter(None, block.split('.')):
    node = node[part]
  with node.ignore_type():
    node[key] = value


@pytest.mark.parametrize('key, value, expected', [
    ('n_bits', 9, r'config\.n_bits=9 .*1\.\.8'),
    ('n_bits', 0, r'config\.n_bits=0 .*1\.\.8'),
    ('train.optimizer', 'sgd', r"config\.train\.optimizer='sgd' .*'adam', 'adamax', 'rmsprop'"),
    ('model.coupling', 'spline', r"config\.model\.coupling='spline' .*'affine', 'additive'"),
    ('model.invconv', 'qr', r"config\.model\.invconv='qr' .*'lu', 'plain'"),
    ('model.coupling_net', 'resnet', r"config\.model\.coupling_net='resnet' .*'glow'"),
    ('model.recompute', 'always', r"config\.model\.recompute='always' .*'checkpoint', 'invertible'"),
    ('model.dtype', 'float16', r"config\.model\.dtype='float16' .*'float32', 'bfloat16'"),
    ('model.num_levels', 5, r'config\.data\.image_size=16 .*divisible by 32 .*model\.num_levels'),
    ('data.name', 'imagenet_full', r"config\.data\.name='imagenet_full' .*fashion_mnist"),
    ('data.image_size', 24, r'config\.data\.image_size=24'),
    ('train.learning_rate', -1.0, r'config\.train\.learning_rate=-1\.0'),
    ('train.ema_decay', 1.0, r'config\.train\.ema_decay=1\.0 .*\[0, 1\)'),
    ('eval.dequantization', 'gaussian', r"config\.eval\.dequantization='gaussian' .*'uniform'"),
    ('evals.fashion_mnist_test.data.name', 'svhn',
     r"config\.evals\.fashion_mnist_test\.data\.name='svhn' .*allowed values"),
    ('evals.fashion_mnist_test.split', '', r"config\.evals\.fashion_mnist_test\.split='' "),
    ('evals.fashion_mnist_test.batch_size', 3,
     r'config\.evals\.fashion_mnist_test\.batch_size=3 .*number of devices'),
    ('evals.fashion_mnist_test.dequantization', 'gauss',
     r"config\.evals\.fashion_mnist_test\.dequantization='gauss' .*uniform"),
    ('model.hidden_channels', 0, r'config\.model\.hidden_channels=0 .*1\.\.inf'),
    ('model.learn_top_prior', 1, r'config\.model\.learn_top_prior=1 .*True or False'),
    ('model.kind', 'gan', r"config\.model\.kind='gan' is not a model kind.*'glow'"),
    ('sample.temperatures', (0.7, -1.0), r'config\.sample\.temperatures=.*positive'),
])
def test_bad_value_names_key_value_and_allowed(tiny_config, key, value, expected):
  _set(tiny_config, key, value)
  with pytest.raises(ValueError, match=expected):
    config_validation.validate_config(tiny_config, device_count=2)


def test_model_schema_is_the_modules_fields(tiny_config):
  # Every Glow field is a config key (and nothing else is), its Literal choices are checked.
  fields = [f.name for f in dataclasses.fields(flows.Glow) if f.name not in ('parent', 'name')]
  assert set(config_validation.known_keys(tiny_config, 'model')) == {'kind', *fields}
  assert set(tiny_config.model.keys()) == {'kind', *fields}
  kind = model_kinds.KINDS['glow']
  assert kind.choices('coupling') == ('affine', 'additive')
  assert kind.defaults()['coupling'] == flows.Glow.coupling


def test_eval_block_with_unknown_key_and_the_old_string_key(tiny_config):
  with tiny_config.unlocked():
    tiny_config.evals.fashion_mnist_test.tag = 'x'
  with pytest.raises(ValueError, match=r'config\.evals\.fashion_mnist_test has unknown key.*tag'):
    config_validation.validate_config(tiny_config, device_count=1)
  with tiny_config.unlocked():
    del tiny_config.evals.fashion_mnist_test['tag']
    tiny_config.eval.datasets = 'mnist:test'
  with pytest.raises(ValueError, match=r'config\.eval\.datasets was replaced by config\.evals'):
    config_validation.validate_config(tiny_config, device_count=1)


def test_eval_sets_take_the_eval_defaults_and_the_training_data_source(tiny_config):
  tiny_config.eval.max_examples = 7
  tiny_config.evals.mine = eval_sets.eval_block('npz', 'train', path='/d/mine.npz', batch_size=4)
  tiny_config.evals.digits = eval_sets.eval_block('mnist', 'test', max_examples=3)
  sets = {s.key: s for s in config_validation.validate_config(tiny_config, device_count=1)}
  own = sets['fashion_mnist_test']
  # The training data's own set reads where training reads (an IDX dir here).
  assert own.data.path == tiny_config.data.path and own.data.source == tiny_config.data.source
  assert (own.max_examples, own.batch_size, own.dequantization) == (7, 16, 'uniform')
  assert own.data.image_size == 16 and own.data.augment == 'none'
  assert (sets['mine'].data.name, sets['mine'].split, sets['mine'].batch_size) == (
      'npz', 'train', 4)
  assert sets['digits'].data.path is None and sets['digits'].max_examples == 3


@pytest.mark.parametrize('text, key, name, split, path', [
    ('mnist:test', 'mnist_test', 'mnist', 'test', None),
    ('digits=mnist:train', 'digits', 'mnist', 'train', None),
    ('/d/attacked.npz', 'attacked', 'npz', 'test', '/d/attacked.npz'),
    ('adv=/d/x.npz:train', 'adv', 'npz', 'train', '/d/x.npz'),
])
def test_add_eval_flag_values(text, key, name, split, path):
  got_key, block = eval_sets.parse_add_eval(text)
  assert (got_key, block.data.name, block.split, block.data.path) == (key, name, split, path)


def test_add_eval_flag_rejects_what_it_cannot_read():
  with pytest.raises(ValueError, match='NAME:SPLIT'):
    eval_sets.parse_add_eval('mnist')


@pytest.mark.parametrize('name', ['fashion_mnist_quick', 'fashion_mnist', 'cifar10',
                                  'cifar10_glow'])
def test_shipped_configs_are_valid(name):
  module = importlib.import_module(f'glow_ood.configs.{name}')
  config = module.get_config()
  config_validation.validate_config(config, device_count=1)
  for field in ('additive', 'affine'):
    config.model.coupling = field
    config_validation.validate_config(config, device_count=1)


def test_batch_not_divisible_by_device_count(tiny_config):
  tiny_config.train.batch_size = 6
  with pytest.raises(ValueError, match=r'config\.train\.batch_size=6 .*number of devices \(4\)'):
    config_validation.validate_config(tiny_config, device_count=4)


def test_unknown_key_in_config_file(tiny_config):
  tiny_config.unlock()
  tiny_config.train.lerning_rate = 0.1
  with pytest.raises(ValueError, match=r'Unknown config key\(s\) train\.lerning_rate'):
    config_validation.validate_config(tiny_config, device_count=1)


def test_old_remat_key_names_recompute(tiny_config):
  tiny_config.unlock()
  tiny_config.model.remat = True
  with pytest.raises(ValueError, match=r"config\.model\.remat was replaced by config\.model\.recompute"):
    config_validation.validate_config(tiny_config, device_count=1)


def test_unknown_override_on_command_line():
  argv = ['main', '--config=x.py', '--config.train.lerning_rate=0.1']
  message = main_lib.unknown_override_message(argv)
  assert "'train.lerning_rate'" in message and 'learning_rate' in message
  assert main_lib.unknown_override_message(['main', '--config.train.num_steps=3']) is None
  assert 'no block config.optim' in main_lib.unknown_override_message(
      ['main', '--config.optim.lr=1'])

  # The real entry point fails with that message before any compute.
  result = subprocess.run(
      [sys.executable, '-m', 'glow_ood.main', f'--config={TINY_CONFIG}', '--workdir=/nonexistent',
       '--config.train.lerning_rate=0.1'],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "ConfigError: Unknown config key 'train.lerning_rate'" in result.stderr


def test_missing_data_file_raises_data_unavailable(tiny_config, tmp_path):
  tiny_config.data.path = str(tmp_path / 'no_such_dir')
  with pytest.raises(DataUnavailableError):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  tiny_config.train.num_steps = 2
  tiny_config.train.checkpoint_every = 2
  train.train_and_evaluate(tiny_config, workdir)
  good, _ = load_checkpoint(tiny_config, workdir, 2)

  # Resume with an absurd learning rate: the first update blows the parameters up.
  tiny_config.train.num_steps = 10
  tiny_config.train.learning_rate = 1e30
  tiny_config.train.warmup_steps = 0
  with pytest.raises(FloatingPointError, match=r'Non-finite .* at training step \d+.*'
                                               r'last good checkpoint \(step 2\).*learning_rate'):
    train.train_and_evaluate(tiny_config, workdir)
  assert checkpointing.available_steps(workdir) == [2]
  restored, meta = load_checkpoint(tiny_config, workdir)
  assert meta['step'] == 2
  for leaf_a, leaf_b in zip(*(jax_leaves(t.params) for t in (good, restored))):
    assert (leaf_a == leaf_b).all()
  assert not [name for name in os.listdir(os.path.join(workdir, 'checkpoints'))
              if name.isdigit() and name != '2']


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def test_a_field_of_another_kind_names_its_kind_and_the_allowed_ones(tiny_config):
  pixelcnn = tiny.get_config('pixelcnn')
  config_validation.validate_config(pixelcnn, device_count=1)
  with pixelcnn.unlocked():
    pixelcnn.model.coupling = 'affine'
  with pytest.raises(ValueError, match=r"config\.model\.coupling is a field of model kind "
                                       r"'glow', not of 'pixelcnn'; pixelcnn takes: .*num_resnets"):
    config_validation.validate_config(pixelcnn, device_count=1)
  vae = tiny.get_config('vae')
  vae.model.decoder_scale = 'global'
  with pytest.raises(ValueError, match=r"config\.model\.decoder_scale='global' .*'per_pixel'"):
    config_validation.validate_config(vae, device_count=1)
  vae.model.decoder_scale = 'per_pixel'
  vae.model.num_blocks = 5   # 16x16 images, 2**5 downsampling
  with pytest.raises(ValueError, match=r'config\.data\.image_size=16 .*divisible by 32'):
    config_validation.validate_config(vae, device_count=1)


def test_a_config_recorded_before_newer_keys_loads_with_their_defaults(tiny_config, tmp_path):
  from glow_ood import workdir_config  # pylint: disable=g-import-not-at-top
  config = tiny_config
  config.train.num_steps = 7
  config.train.profile_steps = 3
  workdir = str(tmp_path)
  workdir_config.record(config, workdir)
  # Rewrite the file as an earlier version wrote it: without keys added since.
  path = workdir_config.config_path(workdir)
  with open(path) as f:
    document = json.load(f)
  del document['config']['train']['profile_steps']
  del document['config']['model']['scan_unroll']
  with open(path, 'w') as f:
    json.dump(document, f)
  loaded = workdir_config.get_config(workdir)
  assert loaded.train.profile_steps == 0 and loaded.model.scan_unroll is None
  assert loaded.train.num_steps == 7           # recorded values are kept
  config_validation.validate_config(loaded, device_count=1)
  # A value that was recorded is never replaced by a default.
  workdir_config.record(config, str(tmp_path / 'current'))
  assert workdir_config.get_config(str(tmp_path / 'current')).train.profile_steps == 3
