"""A convolutional VAE with a discretized-logistic decoder at three sizes, applied to any
training config.

  tiny   seconds-long smoke runs and tests
  quick  latent 32, 16 base filters, 3 strided blocks: about 4 minutes of training
         on 2 CPU cores; its log-likelihood is the importance-weighted bound with
         K = 10 samples (K = 100 costs 10x the evaluation time)
  paper  the nearest documented setting to Rosca et al. 2018 (which the paper used;
         its exact layers are not given here: see glow_ood.models.vae): latent 64,
         64 filters, 3 blocks, K = 100; accelerators
"""
import ml_collections

from glow_ood.configs import common

SIZES = {
    'tiny': dict(latent_dim=4, num_filters=4, num_blocks=2, num_importance_samples=4),
    'quick': dict(latent_dim=32, num_filters=16, num_blocks=3, num_importance_samples=10),
    'paper': dict(latent_dim=64, num_filters=64, num_blocks=3, num_importance_samples=100),
}
TRAIN = {
    'quick': dict(batch_size=64, num_steps=2_500, optimizer='adam', learning_rate=1e-3,
                  warmup_steps=100, checkpoint_every=500),
    'paper': dict(batch_size=64, num_steps=200_000, optimizer='adam', learning_rate=3e-4,
                  warmup_steps=1_000, checkpoint_every=10_000),
}


def convert(config: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
  """`config` (any training config) with a VAE of `size`; returns it."""
  return common.with_model(config, 'vae', size, SIZES, TRAIN)
