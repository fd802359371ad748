"""The config lives in the installed package: glow_ood/configs/cifar10_glow.py."""
from glow_ood.configs.cifar10_glow import get_config  # pylint: disable=unused-import
