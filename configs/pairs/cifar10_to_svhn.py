"""The config lives in the installed package: glow_ood/configs/pairs/cifar10_to_svhn.py."""
from glow_ood.configs.pairs.cifar10_to_svhn import get_config  # pylint: disable=unused-import
