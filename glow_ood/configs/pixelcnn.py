"""PixelCNN++ (Salimans et al. 2017) at three sizes, applied to any training config.

  tiny   seconds-long smoke runs and tests
  quick  1 gated resnet per stage, 16 filters, 5 logistics: about 8 minutes of
         training on 2 CPU cores at 32x32 (a fraction of an epoch: PixelCNN++ is
         the costliest model here per image on a CPU)
  paper  Salimans et al.'s CIFAR-10 model: 5 resnets per stage, 160 filters, 10
         logistics, dropout 0.5, Adam 1e-3 (2.92 bits/dim on CIFAR-10); accelerators
"""
import ml_collections

from glow_ood.configs import common

SIZES = {
    'tiny': dict(num_resnets=1, num_filters=8, num_logistic_mix=2, dropout_rate=0.0),
    'quick': dict(num_resnets=1, num_filters=16, num_logistic_mix=5, dropout_rate=0.0),
    'paper': dict(num_resnets=5, num_filters=160, num_logistic_mix=10, dropout_rate=0.5),
}
# Training settings per size ('tiny' keeps the config's own).
TRAIN = {
    'quick': dict(batch_size=32, num_steps=1_000, optimizer='adam', learning_rate=1e-3,
                  warmup_steps=50, checkpoint_every=200),
    'paper': dict(batch_size=16, num_steps=500_000, optimizer='adam', learning_rate=1e-3,
                  warmup_steps=1_000, checkpoint_every=10_000),
}


def convert(config: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
  """`config` (any training config) with a PixelCNN++ model of `size`; returns it."""
  config = common.with_model(config, 'pixelcnn', size, SIZES, TRAIN)
  # Sampling runs the network once per pixel: keep the grids small.
  config.sample.num = min(config.sample.num, 16)
  return config
