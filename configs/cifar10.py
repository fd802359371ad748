"""The config lives in the installed package: glow_ood/configs/cifar10.py."""
from glow_ood.configs.cifar10 import get_config  # pylint: disable=unused-import
