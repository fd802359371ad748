"""ImageNet 32x32 (downsampled_imagenet/32x32; 'test' reads its validation split)
-> CIFAR-10, CIFAR-100 and SVHN, through TFDS.

  python experiments/reproduce.py --pair=imagenet32_to_cifar10_cifar100_svhn --variant=paper \
      --workdir=runs/imagenet32 --config.glow.data.data_dir=gs://<bucket>/tensorflow_datasets \
      --config.cv_glow.data.data_dir=gs://<bucket>/tensorflow_datasets

The TFDS download URL of downsampled_imagenet is dead: prepare it once elsewhere and
point data.data_dir at the prepared copy. Same model sizes as cifar10_to_svhn.
"""
from glow_ood.configs.pairs import cifar10_to_svhn
from glow_ood.configs.pairs import pair_base

PAIR = 'imagenet32_to_cifar10_cifar100_svhn'
OOD = (('cifar10', 'test'), ('cifar100', 'test'), ('svhn_cropped', 'test'))


def get_config(variant='paper'):
  glow = cifar10_to_svhn.colour_glow(variant)
  glow.data.name = 'imagenet32'
  if variant == 'paper':
    glow.train.num_steps = 1_000_000   # ~25 epochs of 1.28M images at batch 32
  config = pair_base.make_pair_config(PAIR, variant, glow, OOD)
  config = cifar10_to_svhn.finish(config, variant)
  if variant != 'tiny':
    config.experiment.train_examples = 50_000  # a subset of the 1.28M training images
  return config
