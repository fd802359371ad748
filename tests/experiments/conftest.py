"""Shared pieces of the experiment tests: tiny offline data and tiny pair configs."""

import gzip
import os
import struct

import numpy as np
import pytest

from glow_ood.configs.pairs import pair_base

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_idx(path: str, images: np.ndarray) -> None:
  header = struct.pack('>BBBB', 0, 0, 0x08, images.ndim) + struct.pack(
      f'>{images.ndim}I', *images.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + images.astype(np.uint8).tobytes())


def blobs(num: int, size: int, seed: int, width=(2.0, 5.0), level=255.0) -> np.ndarray:
  """Smooth random blobs with pixel noise, uint8 [num, size, size]: learnable, not constant."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  centres = rng.uniform(size * 0.2, size * 0.8, (num, 2, 1, 1))
  widths = rng.uniform(*width, (num, 1, 1))
  image = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / widths ** 2)
  return np.clip(image * level + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='session')
def offline_data(tmp_path_factory):
  """FashionMNIST-style IDX files (wide blobs) and .npz files for MNIST / the glyph set."""
  root = tmp_path_factory.mktemp('experiment_data')
  idx_dir = root / 'fashion_idx'
  idx_dir.mkdir()
  _write_idx(str(idx_dir / 'train-images-idx3-ubyte.gz'), blobs(48, 28, 1, (5, 9)))
  _write_idx(str(idx_dir / 't10k-images-idx3-ubyte.gz'), blobs(32, 28, 2, (5, 9)))
  mnist = str(root / 'mnist.npz')
  np.savez(mnist, test=blobs(32, 28, 3, (2, 3)))            # thin, lower-variance "digits"
  glyphs = str(root / 'glyphs.npz')
  np.savez(glyphs, train=blobs(48, 28, 4, (4, 8)), test=blobs(32, 28, 5, (4, 8)))
  return {'fashion_idx': str(idx_dir), 'mnist_npz': mnist, 'glyphs_npz': glyphs}


def tiny_pair_config(pair: str, **train_overrides):
  """glow_ood/configs/pairs/<pair>.py at its 'tiny' variant, with training fields overridden."""
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'glow_ood.configs.pairs.{pair}')
  config = module.get_config('tiny')
  for model in pair_base.model_configs(config):
    for key, value in train_overrides.items():
      model.train[key] = value
  return config
