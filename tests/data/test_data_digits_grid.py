"""Cutting a synthetic digits grid: order, labels, MNIST padding."""

import numpy as np
import pytest
from PIL import Image

from glow_ood.data import DataSpec
from glow_ood.data import DataUnavailableError
from glow_ood.data import digits_grid
from glow_ood.data import load_array

ROWS_PER_CLASS, COLS = 2, 3


def cell_value(label, row, col):
  # Distinct per cell: class, row within class and column are all recoverable.
  return 1 + label * 10 + row * COLS + col


@pytest.fixture(name='grid_path')
def fixture_grid_path(tmp_path):
  grid = np.zeros((10 * ROWS_PER_CLASS * 20, COLS * 20), np.uint8)
  for label in range(10):
    for row in range(ROWS_PER_CLASS):
      for col in range(COLS):
        top = (label * ROWS_PER_CLASS + row) * 20
        grid[top:top + 20, col * 20:(col + 1) * 20] = cell_value(label, row, col)
  path = tmp_path / 'digits.png'
  Image.fromarray(grid).save(path)
  return str(path)


def test_cells_in_class_row_column_order(grid_path):
  grid = np.asarray(Image.open(grid_path))
  cells, labels = digits_grid.cut_grid(grid)
  assert cells.shape == (10 * ROWS_PER_CLASS * COLS, 20, 20)
  expected = [(label, row, col) for label in range(10)
              for row in range(ROWS_PER_CLASS) for col in range(COLS)]
  for cell, label, (want_label, row, col) in zip(cells, labels, expected):
    assert label == want_label
    assert np.all(cell == cell_value(want_label, row, col))


def test_padded_to_28_then_32(grid_path):
  digits = digits_grid.load_digits_grid(grid_path, 'test')
  assert digits.shape == (60, 28, 28, 1) and digits.dtype == np.uint8
  assert np.all(digits[:, 4:24, 4:24] == digits[:, 14:15, 14:15])
  assert digits[:, :4].max() == 0 and digits[:, 24:].max() == 0
  assert digits[:, :, :4].max() == 0 and digits[:, :, 24:].max() == 0

  images = load_array(DataSpec('mnist', source='offline', path=grid_path), 'test')
  assert images.shape == (60, 32, 32, 1)
  np.testing.assert_array_equal(images[:, 2:30, 2:30], digits)
  assert images[:, :6].max() == 0 and images[:, 26:].max() == 0
  assert images[7, 16, 16, 0] == cell_value(1, 0, 1)  # 8th cell: class 1, row 0, col 1


def test_no_offline_train_split(grid_path):
  with pytest.raises(DataUnavailableError, match='only split "test"'):
    load_array(DataSpec('mnist', source='offline', path=grid_path), 'train')


def test_grid_of_wrong_shape(tmp_path):
  path = tmp_path / 'odd.png'
  Image.fromarray(np.zeros((30, 40), np.uint8)).save(path)
  with pytest.raises(DataUnavailableError, match=str(path)):
    digits_grid.load_digits_grid(str(path), 'test')
