"""validate_spec and DataSpec.from_config."""

import ml_collections
from ml_collections import config_dict
import pytest

from glow_ood.data import DataSpec
from glow_ood.data import validate_spec


@pytest.mark.parametrize('kwargs, field, bad', [
    (dict(name='omniglot'), 'name', "'omniglot'"),
    (dict(name='mnist', source='gcs'), 'source', "'gcs'"),
    (dict(name='mnist', image_size=30), 'image_size', '30'),
    (dict(name='mnist', image_size='32'), 'image_size', "'32'"),
    (dict(name='mnist', channels=2), 'channels', '2'),
    (dict(name='mnist', channels=True), 'channels', 'True'),
    (dict(name='mnist', augment='crop'), 'augment', "'crop'"),
    (dict(name='mnist', path=''), 'path', "''"),
    (dict(name='notmnist_glyphs', source='tfds'), 'source', "'tfds'"),
    (dict(name='npz'), 'path', 'None'),
    (dict(name='cifar10', source='offline'), 'path', 'None'),
])
def test_bad_field_named_with_value_and_allowed(kwargs, field, bad):
  with pytest.raises(ValueError) as info:
    validate_spec(DataSpec(**kwargs))
  message = str(info.value)
  assert f'DataSpec.{field}={bad}' in message
  assert 'allowed' in message


def test_good_specs_pass_without_touching_files():
  validate_spec(DataSpec('cifar10', source='tfds', data_dir='gs://no/such/bucket',
                         channels=3, augment='flip'))
  validate_spec(DataSpec('npz', path='/no/such/file.npz', image_size=28))
  validate_spec(DataSpec('fashion_mnist', source='offline', image_size=64))


def test_from_config_takes_exactly_the_fields():
  cfg = ml_collections.ConfigDict()
  cfg.name = 'cifar10'
  cfg.source = 'auto'
  cfg.path = config_dict.placeholder(str)
  cfg.data_dir = config_dict.placeholder(str)
  cfg.image_size = 32
  cfg.channels = 3
  cfg.augment = 'flip'
  spec = DataSpec.from_config(cfg)
  assert spec == DataSpec('cifar10', channels=3, augment='flip')

  cfg.channels = 4
  with pytest.raises(ValueError, match='channels'):
    DataSpec.from_config(cfg)
  cfg.channels = 1
  cfg.batch_size = 8
  with pytest.raises(ValueError, match='batch_size'):
    DataSpec.from_config(cfg)
