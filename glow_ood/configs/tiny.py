"""A tiny model (Glow: L=2, K=2, 8 channels; 16x16 grey) that trains in seconds: tests and
smoke runs.

  python -m glow_ood.main --config=glow_ood/configs/tiny.py --workdir=/tmp/tiny
  python -m glow_ood.main --config=glow_ood/configs/tiny.py:pixelcnn --workdir=/tmp/tiny_pcnn

`shrink` makes any training config tiny in place (the pair experiments' tiny
variant uses it); `get_config(kind)` is the FashionMNIST one, for any model kind.
"""
import ml_collections

from glow_ood import model_kinds
from glow_ood.configs import common


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a training config to a seconds-long run at 16x16; returns it."""
  config.data.image_size = 16
  common.with_kind(config, config.model.kind, 'tiny')
  config.train.batch_size = 8
  config.train.num_steps = 8
  config.train.optimizer = 'adam'
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 2
  config.train.log_every = 2
  config.train.eval_every = 0
  config.train.eval_examples = 16
  config.train.checkpoint_every = 4
  config.eval.batch_size = 16
  config.sample.num = 4
  return config


def get_config(kind='glow'):
  if kind not in model_kinds.KINDS:
    raise ValueError(f'Unknown model kind {kind!r}; choose one of {", ".join(model_kinds.KINDS)}.')
  config = common.with_kind(shrink(common.base_config()), kind, 'tiny')
  config.data.name = 'fashion_mnist'
  config.data.channels = 1
  config.train.keep_checkpoints = 20
  return config
