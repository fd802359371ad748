"""The quick-size PixelCNN++ on FashionMNIST (32x32, zero-padded), on 2 CPU cores.

  python -m glow_ood.main --config=configs/fashion_mnist_pixelcnn.py --workdir=/tmp/fm_pixelcnn

The paper size: --config=configs/fashion_mnist_pixelcnn.py:paper (accelerators).
"""
from glow_ood.configs import fashion_mnist_quick


def get_config(size='quick'):
  return fashion_mnist_quick.of_kind('pixelcnn', size)
