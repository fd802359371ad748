"""The config lives in the installed package: glow_ood/configs/fashion_mnist_quick.py."""
from glow_ood.configs.fashion_mnist_quick import get_config  # pylint: disable=unused-import
