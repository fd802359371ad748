"""Every pair config loads at every variant, validates, and names sensible evaluation sets."""

import os

import pytest

from configs.pairs import pair_base
from glow_ood import config_validation
from glow_ood.experiment import eval_plan
from glow_ood.experiment.command_line import with_default_config
from tests.experiments.conftest import REPO_ROOT

PAIRS = ('fashion_mnist_to_mnist', 'notmnist_to_mnist', 'cifar10_to_svhn', 'celeb_a_to_svhn',
         'imagenet32_to_cifar10_cifar100_svhn')
COLOUR_PAIRS = PAIRS[2:]


def _load(pair, variant):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f'configs.pairs.{pair}').get_config(variant)


def test_every_pair_config_file_is_listed():
  files = sorted(f[:-3] for f in os.listdir(os.path.join(REPO_ROOT, 'configs', 'pairs'))
                 if f.endswith('.py') and f not in ('__init__.py', 'pair_base.py'))
  assert files == sorted(PAIRS)


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
  for model in eval_plan.MODELS:
    model_config = config[model]
    assert model_config.data.channels == expected_channels
    assert model_config.data.augment == 'none' or variant == 'paper'
    config_validation.validate_config(model_config, device_count=1, check_data=False)
    sets = eval_plan.eval_sets(config, model)
    assert [s.label for s in sets[:2]] == ['train', 'test']
    assert all(s.entry.name == model_config.data.name for s in sets[:2])
    assert sets[2:] and all(s.is_ood for s in sets[2:])
    curve_sets = eval_plan.eval_sets(config, model, curve=True)
    assert all(s.entry.tag.startswith(eval_plan.CURVE_PREFIX) for s in curve_sets)
    # Evaluation never augments, whatever training does.
    for s in sets:
      assert config_validation.data_fields_for(model_config, s.entry)['augment'] == 'none'


def test_quick_variant_uses_the_agreed_subsets():
  exp = _load('fashion_mnist_to_mnist', 'quick').experiment
  assert (exp.train_examples, exp.test_examples, exp.ood_examples) == (2000, 2000, 5000)
  assert 'cv_glow' in exp.curve_models


def test_imagenet_pair_has_three_ood_sets():
  sets = eval_plan.eval_sets(_load('imagenet32_to_cifar10_cifar100_svhn', 'paper'), 'glow')
  assert [s.label for s in sets] == ['train', 'test', 'cifar10', 'cifar100', 'svhn_cropped']


def test_command_line_defaults_to_the_pair_file():
  pairs_dir = os.path.join(REPO_ROOT, 'configs', 'pairs')
  argv = with_default_config(
      ['reproduce.py', '--pair=cifar10_to_svhn', '--variant=paper', '--workdir=/tmp/x'], pairs_dir)
  assert argv[1] == '--config=' + os.path.join(REPO_ROOT, 'configs', 'pairs',
                                               'cifar10_to_svhn.py') + ':paper'
  given = ['reproduce.py', '--config=configs/pairs/celeb_a_to_svhn.py:tiny', '--workdir=/tmp/x']
  assert with_default_config(given, pairs_dir) == given
  with pytest.raises(SystemExit, match='known pairs'):
    with_default_config(['reproduce.py', '--pair=nonsense'], pairs_dir)
