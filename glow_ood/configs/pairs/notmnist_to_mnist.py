"""NotMNIST (letters A-J rendered from installed fonts) -> MNIST, offline.

  python experiments/reproduce.py --pair=notmnist_to_mnist --variant=quick --workdir=runs/notmnist_mnist

The glyph set (glow_ood.data.glyphs) is split by font family; MNIST is the 5,000
offline digits (opencv-doc) or TFDS. Variants as for fashion_mnist_to_mnist.
"""
from glow_ood.configs.pairs import fashion_mnist_to_mnist
from glow_ood.configs.pairs import pair_base

PAIR = 'notmnist_to_mnist'


def get_config(variant='quick'):
  config = fashion_mnist_to_mnist.get_config(variant)
  config.pair = PAIR
  for model in pair_base.model_configs(config):
    model.data.name = 'notmnist_glyphs'
    model.data.source = 'auto'
    model.data.path = None
  return config
