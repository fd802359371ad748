"""The quick-size PixelCNN++ on FashionMNIST (32x32, zero-padded), on 2 CPU cores.

  python -m glow_ood.main --config=configs/fashion_mnist_pixelcnn.py --workdir=/tmp/fm_pixelcnn

The paper size: --config=configs/fashion_mnist_pixelcnn.py:paper (accelerators).
"""
from glow_ood.configs import fashion_mnist_quick
from glow_ood.configs import common


def get_config(size='quick'):
  config = fashion_mnist_quick.get_config()
  config.train.eval_every = 0           # samples are costly; --mode=evaluate and sample after
  return common.with_kind(config, 'pixelcnn', size)
