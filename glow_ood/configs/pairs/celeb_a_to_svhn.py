"""CelebA (centre-cropped 140x140, resized to 32x32) -> SVHN, through TFDS.

  python experiments/reproduce.py --pair=celeb_a_to_svhn --variant=paper --workdir=runs/celeba_svhn

Same model sizes as cifar10_to_svhn (variants paper, quick, tiny).
"""
from glow_ood.configs.pairs import cifar10_to_svhn
from glow_ood.configs.pairs import pair_base

PAIR = 'celeb_a_to_svhn'
OOD = (('svhn_cropped', 'test'),)  # (data set, split): its label is the name


def get_config(variant='paper'):
  glow = cifar10_to_svhn.colour_glow(variant)
  glow.data.name = 'celeb_a'
  config = pair_base.make_pair_config(PAIR, variant, glow, OOD)
  return cifar10_to_svhn.finish(config, variant)
