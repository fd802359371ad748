"""Every pair config loads at every variant, validates, and names sensible evaluation sets."""

import importlib
import os
import runpy

import pytest

from glow_ood import config_validation
from glow_ood.configs.pairs import pair_base
from glow_ood.experiment import eval_plan
from glow_ood.experiment import pipeline
from glow_ood.experiment.command_line import PAIRS_DIR, with_default_config
from tests.experiments.conftest import REPO_ROOT

PAIRS = ('fashion_mnist_to_mnist', 'notmnist_to_mnist', 'cifar10_to_svhn', 'celeb_a_to_svhn',
         'imagenet32_to_cifar10_cifar100_svhn')
COLOUR_PAIRS = PAIRS[2:]


def _load(pair, variant):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f'glow_ood.configs.pairs.{pair}').get_config(variant)


@pytest.mark.parametrize('path', sorted(
    os.path.join(d, f) for d in ('configs', os.path.join('configs', 'pairs'))
    for f in os.listdir(os.path.join(REPO_ROOT, d)) if f.endswith('.py')))
def test_repository_config_paths_give_the_package_configs(path):
  # --config=configs/<name>.py keeps working: the file gives the installed package's config.
  module = runpy.run_path(os.path.join(REPO_ROOT, path))
  package = importlib.import_module('glow_ood.' + path[:-3].replace(os.sep, '.'))
  args = ('tiny',) if 'pairs' in path else ()
  assert module['get_config'](*args).to_dict() == package.get_config(*args).to_dict()


@pytest.mark.parametrize('variant', pair_base.VARIANTS)
@pytest.mark.parametrize('pair', PAIRS)
def test_pair_config_validates(pair, variant):
  config = _load(pair, variant)
  assert config.pair == pair and config.variant == variant
  assert config.glow.model.coupling == 'affine'
  assert config.cv_glow.model.coupling == 'additive'
  # The two models differ only in the coupling.
  glow, cv = config.glow.to_dict(), config.cv_glow.to_dict()
  glow['model'].pop('coupling'), cv['model'].pop('coupling')
  assert glow == cv
  expected_channels = 3 if pair in COLOUR_PAIRS else 1
  assert pipeline.check_pair_config(config) == eval_plan.models_of(config)
  for model in eval_plan.models_of(config):
    model_config = config[model]
    assert model_config.data.channels == expected_channels
    assert model_config.data.augment == 'none' or variant == 'paper'
    sets = eval_plan.eval_sets(config, model)
    assert [s.label for s in sets[:2]] == ['train', 'test']
    assert all(s.entry.name == model_config.data.name for s in sets[:2])
    assert sets[2:] and all(s.is_ood for s in sets[2:])
    curve_sets = eval_plan.eval_sets(config, model, curve=True)
    assert all(s.entry.key.startswith(eval_plan.CURVE_PREFIX) for s in curve_sets)
    # Evaluation never augments, whatever training does, and sees the model's image shape.
    for s in sets + curve_sets:
      assert s.entry.data.augment == 'none'
      assert s.entry.data.image_size == model_config.data.image_size


def test_experiment_sizes_reach_the_evaluation_sets():
  config = _load('fashion_mnist_to_mnist', 'quick')
  exp = config.experiment
  sets = eval_plan.eval_sets(config, 'cv_glow')
  assert [s.entry.max_examples for s in sets] == [
      exp.train_examples, exp.test_examples, exp.ood_examples]
  assert [s.entry.key for s in sets] == ['fashion_mnist_train', 'fashion_mnist_test', 'mnist_test']
  # A block's own size wins over the experiment's default for OOD sets.
  config.experiment.ood.mnist.max_examples = 17
  assert eval_plan.eval_sets(config, 'cv_glow')[2].entry.max_examples == 17
  curves = eval_plan.eval_sets(config, 'cv_glow', curve=True)
  assert {s.entry.max_examples for s in curves} == {exp.curve_examples}


def test_bad_ood_block_is_named_with_its_experiment_key():
  config = _load('fashion_mnist_to_mnist', 'tiny')
  config.experiment.ood.mnist.data.name = 'svhn'
  with pytest.raises(config_validation.ConfigError,
                     match=r"config\.experiment\.ood\.mnist\.data\.name='svhn'"):
    pipeline.check_pair_config(config)
  config.experiment.ood.mnist.data.name = 'mnist'
  config.experiment.headline_ood = 'svhn'
  with pytest.raises(ValueError, match='headline_ood'):
    pipeline.check_pair_config(config)


def test_imagenet_pair_has_three_ood_sets():
  sets = eval_plan.eval_sets(_load('imagenet32_to_cifar10_cifar100_svhn', 'paper'), 'glow')
  assert [s.label for s in sets] == ['train', 'test', 'cifar10', 'cifar100', 'svhn_cropped']


def test_command_line_defaults_to_the_pair_file():
  pairs_dir = PAIRS_DIR
  argv = with_default_config(
      ['reproduce.py', '--pair=cifar10_to_svhn', '--variant=paper', '--workdir=/tmp/x'], pairs_dir)
  assert argv[1] == '--config=' + os.path.join(PAIRS_DIR, 'cifar10_to_svhn.py') + ':paper'
  given = ['reproduce.py', '--config=configs/pairs/celeb_a_to_svhn.py:tiny', '--workdir=/tmp/x']
  assert with_default_config(given, pairs_dir) == given
  with pytest.raises(SystemExit, match='known pairs'):
    with_default_config(['reproduce.py', '--pair=nonsense'], pairs_dir)


@pytest.mark.parametrize('key', ['experiment.curve_models', 'experiment.ensemble_models',
                                 'background.models'])
def test_a_misspelt_model_list_is_named(key):
  config = _load('fashion_mnist_to_mnist', 'tiny')
  block, field = key.split('.')
  config[block][field] = 'glow,cvglow'
  with pytest.raises(config_validation.ConfigError, match=rf"config\.{key}='glow,cvglow' "
                     r"names \['cvglow'\]"):
    pipeline.check_pair_config(config)
  config[block][field] = ''   # an empty list is allowed: that part is off
  pipeline.check_pair_config(config)



@pytest.mark.parametrize('pair', ['fashion_mnist_to_mnist', 'notmnist_to_mnist', 'cifar10_to_svhn'])
def test_unset_fields_of_every_model_keep_their_type(pair):
  """The pair's copies keep a None field typed, so --config.<model>.data.path=... parses."""
  config = importlib.import_module(f'glow_ood.configs.pairs.{pair}').get_config('quick')
  for model in eval_plan.MODELS:
    for key in ('path', 'data_dir'):
      assert config[model].data.get_type(key) is str, (model, key)


def test_a_models_data_path_is_overridden_from_the_command_line(tmp_path):
  """The real flag parser: the override reaches the check of the data (a missing file here)."""
  import subprocess
  import sys
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'experiments', 'reproduce.py'), '--variant=tiny',
       f'--workdir={tmp_path / "run"}', f'--config.glow.data.path={tmp_path / "mine.npz"}'],
      capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert 'config.glow.data' in last and 'mine.npz' in last and 'not found' in last, last
  assert 'NoneType' not in result.stderr
