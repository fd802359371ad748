"""MNIST digits from OpenCV's digits.png grid (Debian package opencv-doc).

The grid is 1000 x 2000 grey pixels: 20 x 20 cells, 100 per row, 5 rows per
class, classes 0..9 top to bottom: 5,000 digits, 500 per class. MNIST centres
its 20 x 20 digits in 28 x 28 images, so each cell is padded 4 px a side.

Split semantics: the 5,000 digits serve as held-out (OOD) data, so 'test' is
all of them, in class order then row then column. There is no offline 'train'
split: asking for it raises DataUnavailableError (use MNIST IDX files via
`path`, or TFDS).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from glow_ood.data.errors import unavailable

CELL = 20
NUM_CLASSES = 10
MNIST_PAD = 4  # 20 + 2 * 4 = 28


def cut_grid(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A [rows*20, cols*20] grid -> (uint8 [N, 20, 20] cells, int labels [N]).

  Rows are split evenly among the ten classes, top to bottom; cells are read
  row by row, left to right.
  """
  height, width = grid.shape
  rows, cols = height // CELL, width // CELL
  if height % CELL or width % CELL or rows % NUM_CLASSES or rows == 0:
    raise ValueError(f'digits grid of shape {grid.shape} is not a whole number '
                     f'of {CELL}px cells with rows divisible by {NUM_CLASSES}.')
  cells = grid.reshape(rows, CELL, cols, CELL).transpose(0, 2, 1, 3)
  cells = cells.reshape(rows * cols, CELL, CELL)
  labels = np.repeat(np.arange(NUM_CLASSES), rows // NUM_CLASSES * cols)
  return cells, labels


def load_digits_grid(path: str, split: str) -> np.ndarray:
  """uint8 [N, 28, 28, 1] digits from the grid PNG at `path` (split 'test' only)."""
  if split != 'test':
    raise unavailable(
        f'The OpenCV digits grid {path} is held-out data: only split "test" '
        f'(all {NUM_CLASSES} classes) exists offline, not {split!r}. For MNIST '
        'training data give path=<dir of MNIST IDX files> or use TFDS.', [path])
  try:
    with Image.open(path) as image:
      grid = np.asarray(image.convert('L'), dtype=np.uint8)
  except FileNotFoundError as err:
    raise unavailable(f'Digits grid not found: {path}', [path]) from err
  except OSError as err:  # PIL raises OSError subclasses on bad or truncated PNGs
    raise unavailable(f'Digits grid {path} is unreadable ({err}).', [path]) from err
  try:
    cells, _ = cut_grid(grid)
  except ValueError as err:
    raise unavailable(f'Digits grid {path}: {err}', [path]) from err
  padded = np.pad(cells, ((0, 0), (MNIST_PAD, MNIST_PAD), (MNIST_PAD, MNIST_PAD)))
  return padded[..., None]
