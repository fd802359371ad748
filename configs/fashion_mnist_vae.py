"""The config lives in the installed package: glow_ood/configs/fashion_mnist_vae.py."""
from glow_ood.configs.fashion_mnist_vae import get_config  # pylint: disable=unused-import
