"""Small affine Glow on FashionMNIST that trains in about 10 minutes on 2 CPU cores.

  python -m glow_ood.main --config=configs/fashion_mnist_quick.py --workdir=/tmp/fm_quick

CV-Glow (constant volume): add --config.model.coupling=additive.
"""
import ml_collections

from glow_ood.configs import common
from glow_ood.configs import fashion_mnist
from glow_ood.eval_sets import eval_block


def get_config():
  config = fashion_mnist.get_config()

  config.model.steps_per_level = 8     # K
  config.model.coupling_net = 'glow'   # conv3x3-relu-conv1x1-relu-zeroconv3x3
  config.model.hidden_channels = 64

  config.train.batch_size = 64          # images per step, global
  config.train.num_steps = 1_400        # ~90k images: ~10 min at ~150 img/s on 2 CPU cores
  config.train.optimizer = 'adam'
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.log_every = 25
  config.train.eval_every = 700
  config.train.eval_examples = 1_000
  config.train.checkpoint_every = 250

  config.evals = ml_collections.ConfigDict()  # not the whole train split
  config.evals.fashion_mnist_test = eval_block('fashion_mnist', 'test')
  config.evals.mnist_test = eval_block('mnist', 'test')
  config.sample.num = 36
  return config


def of_kind(kind: str, size: str = 'quick') -> ml_collections.ConfigDict:
  """The same data and evaluation sets with a model of another kind at `size`."""
  config = get_config()
  config.train.eval_every = 0  # samples are costly; --mode=evaluate and sample after
  return common.with_kind(config, kind, size)
