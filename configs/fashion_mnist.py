"""The config lives in the installed package: glow_ood/configs/fashion_mnist.py."""
from glow_ood.configs.fashion_mnist import get_config  # pylint: disable=unused-import
