"""The Glow paper's CIFAR-10 model (Kingma & Dhariwal 2018; 3.35 bits/dim reported).

L=3 levels x K=32 steps, 512-channel coupling nets, Adamax with linear warm-up.
"""
from glow_ood.configs import cifar10


def get_config():
  config = cifar10.get_config()

  config.model.steps_per_level = 32
  config.model.coupling_net = 'glow'
  config.model.hidden_channels = 512

  config.train.batch_size = 64
  config.train.num_steps = 400_000
  config.train.optimizer = 'adamax'
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 5_000    # Glow used ~10 epochs of warm-up
  config.train.grad_clip_norm = 50.0
  return config
