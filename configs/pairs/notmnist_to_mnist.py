"""The config lives in the installed package: glow_ood/configs/pairs/notmnist_to_mnist.py."""
from glow_ood.configs.pairs.notmnist_to_mnist import get_config  # pylint: disable=unused-import
