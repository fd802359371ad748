"""The config lives in the installed package: glow_ood/configs/fashion_mnist_pixelcnn.py."""
from glow_ood.configs.fashion_mnist_pixelcnn import get_config  # pylint: disable=unused-import
