"""A tiny Glow (L=2, K=2, 8 channels, 16x16 grey) for tests; data.path is set per test."""
from configs import common


def get_config():
  config = common.base_config()
  config.data.name = 'fashion_mnist'
  config.data.image_size = 16
  config.data.channels = 1

  config.model.num_levels = 2
  config.model.steps_per_level = 2
  config.model.hidden_channels = 8
  config.model.num_highway_blocks = 1

  config.train.batch_size = 8
  config.train.num_steps = 8
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 2
  config.train.log_every = 2
  config.train.eval_every = 0
  config.train.eval_examples = 16
  config.train.checkpoint_every = 4
  config.train.keep_checkpoints = 20

  config.eval.datasets = 'fashion_mnist:test'
  config.eval.batch_size = 16
  config.sample.num = 4
  return config
