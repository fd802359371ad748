"""The config lives in the installed package: glow_ood/configs/pairs/imagenet32_to_cifar10_cifar100_svhn.py."""
from glow_ood.configs.pairs.imagenet32_to_cifar10_cifar100_svhn import get_config  # pylint: disable=unused-import
