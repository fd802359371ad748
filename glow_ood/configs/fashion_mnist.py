"""Affine Glow on FashionMNIST at the size used for the paper's Figure 1.

L=2 levels x K=16 steps, coupling nets of 3 highway blocks with 200 channels,
RMSprop at 5e-5, batch 32, ~150 epochs. CV-Glow: --config.model.coupling=additive.
"""
from glow_ood.configs import common
from glow_ood.eval_sets import eval_block


def get_config():
  config = common.base_config()

  config.data.name = 'fashion_mnist'
  config.data.image_size = 32          # pixels; 28x28 zero-padded to 32x32
  config.data.channels = 1

  config.model.num_levels = 2          # L
  config.model.steps_per_level = 16    # K
  config.model.coupling = 'affine'
  config.model.coupling_net = 'highway'
  config.model.hidden_channels = 200
  config.model.num_highway_blocks = 3

  config.train.batch_size = 32
  config.train.num_steps = 281_250     # 150 epochs x 60k images / 32
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 5e-5
  config.train.warmup_steps = 1_000

  config.evals.fashion_mnist_train = eval_block('fashion_mnist', 'train')
  config.evals.mnist_test = eval_block('mnist', 'test')
  return config
