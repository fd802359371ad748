"""Affine Glow on CIFAR-10 at the size used for the paper (SVHN as the OOD set).

L=3 levels x K=8 steps, 3 highway blocks of 400 channels, RMSprop at 1e-5, batch 32.
CV-Glow: --config.model.coupling=additive.
"""
import ml_collections

from glow_ood.configs import common
from glow_ood.eval_sets import eval_block


def get_config():
  config = common.base_config()

  config.data.name = 'cifar10'
  config.data.image_size = 32
  config.data.channels = 3

  config.model.num_levels = 3
  config.model.steps_per_level = 8
  config.model.coupling = 'affine'
  config.model.coupling_net = 'highway'
  config.model.hidden_channels = 400
  config.model.num_highway_blocks = 3

  config.train.batch_size = 32
  config.train.num_steps = 500_000     # ~320 epochs of 50k images
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 1e-5
  config.train.warmup_steps = 1_000

  config.evals = ml_collections.ConfigDict()
  for name, split in (('cifar10', 'train'), ('cifar10', 'test'), ('svhn_cropped', 'test')):
    config.evals[f'{name}_{split}'] = eval_block(name, split)
  return config
