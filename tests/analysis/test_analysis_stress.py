"""Stress transforms and synthetic sets on hand-computed tiny images."""

import numpy as np
import pytest

from glow_ood.analysis import stress


def _grey(rows) -> np.ndarray:
  """One grey image [1, H, W, 1] from nested lists."""
  return np.array(rows, dtype=np.uint8)[None, :, :, None]


def _rows(images: np.ndarray) -> list:
  return images[0, :, :, 0].tolist()


SQUARE_2X2 = _grey([[1, 2], [3, 4]])
GRID_3X3 = _grey([[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def test_rotate90_counter_clockwise():
  assert _rows(stress.rotate90(SQUARE_2X2)) == [[2, 4], [1, 3]]
  assert _rows(stress.rotate90(GRID_3X3)) == [[3, 6, 9], [2, 5, 8], [1, 4, 7]]
  # An L (bar on the left, foot to the right) turned left: the bar lies along
  # the bottom and the foot points up at its right end.
  letter_l = _grey([[1, 0, 0], [1, 0, 0], [1, 1, 0]])
  assert _rows(stress.rotate90(letter_l)) == [[0, 0, 0], [0, 0, 1], [1, 1, 1]]


def test_rotate180_and_non_square():
  assert _rows(stress.rotate90(SQUARE_2X2, turns=2)) == [[4, 3], [2, 1]]
  wide = np.zeros((1, 2, 3, 1), dtype=np.uint8)
  assert stress.rotate90(wide, turns=2).shape == wide.shape
  with pytest.raises(ValueError):
    stress.rotate90(wide)


def test_flips():
  assert _rows(stress.flip_horizontal(SQUARE_2X2)) == [[2, 1], [4, 3]]
  assert _rows(stress.flip_vertical(SQUARE_2X2)) == [[3, 4], [1, 2]]
  assert _rows(stress.flip_horizontal(GRID_3X3)) == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]
  assert _rows(stress.flip_vertical(GRID_3X3)) == [[7, 8, 9], [4, 5, 6], [1, 2, 3]]


def test_shift_on_hand_array():
  assert _rows(stress.shift(GRID_3X3, 1)) == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
  assert _rows(stress.shift(GRID_3X3, 1, fill=7)) == [[7, 7, 7], [7, 1, 2], [7, 4, 5]]
  assert _rows(stress.shift(GRID_3X3, 1, fill='edge')) == [[1, 1, 2], [1, 1, 2], [4, 4, 5]]
  assert _rows(stress.shift(GRID_3X3, 0)) == _rows(GRID_3X3)
  assert _rows(stress.shift(GRID_3X3, 5, fill=9)) == [[9] * 3] * 3
  with pytest.raises(ValueError):
    stress.shift(GRID_3X3, 1, fill=256)
  with pytest.raises(ValueError):
    stress.shift(GRID_3X3, -1)


@pytest.mark.parametrize('pixels', [1, 2, 4])
def test_shift_fills_first_rows_and_columns(pixels):
  x = np.random.default_rng(0).integers(1, 256, size=(3, 8, 8, 2), dtype=np.uint8)
  shifted = stress.shift(x, pixels, fill=0)
  assert np.all(shifted[:, :pixels] == 0)
  assert np.all(shifted[:, :, :pixels] == 0)
  np.testing.assert_array_equal(shifted[:, pixels:, pixels:], x[:, :-pixels, :-pixels])


def test_contrast_rounds_half_to_even_and_clips():
  x = _grey([[10, 20], [30, 40]])  # mean 25
  # 25 + 0.5 * (-15, -5, 5, 15) = 17.5, 22.5, 27.5, 32.5: ties go to the even level.
  assert _rows(stress.contrast(x, 0.5)) == [[18, 22], [28, 32]]
  # 25 + 2 * (-15, ...) = -5 (clipped to 0), 15, 35, 55.
  assert _rows(stress.contrast(x, 2.0)) == [[0, 15], [35, 55]]
  bright = _grey([[200, 250], [250, 252]])  # mean 238: 162, 262, 262, 266
  assert _rows(stress.contrast(bright, 2.0)) == [[162, 255], [255, 255]]


def test_contrast_uses_each_image_and_channel_mean():
  x = np.zeros((2, 2, 2, 2), dtype=np.uint8)
  x[0, :, :, 0] = [[10, 20], [30, 40]]
  x[0, :, :, 1] = 100  # constant: no deviation to scale
  x[1, :, :, 0] = [[0, 0], [100, 100]]  # mean 50: 25, 25, 75, 75
  out = stress.contrast(x, 0.5)
  assert out[0, :, :, 0].tolist() == [[18, 22], [28, 32]]
  assert np.all(out[0, :, :, 1] == 100)
  assert out[1, :, :, 0].tolist() == [[25, 25], [75, 75]]


def test_brightness_clips():
  x = _grey([[0, 10], [200, 250]])
  assert _rows(stress.brightness(x, 64)) == [[64, 74], [255, 255]]
  assert _rows(stress.brightness(x, -64)) == [[0, 0], [136, 186]]


def test_invert():
  assert _rows(stress.invert(_grey([[0, 1], [128, 255]]))) == [[255, 254], [127, 0]]


def test_gaussian_noise_deterministic_per_seed():
  x = np.full((2, 8, 8, 1), 128, dtype=np.uint8)
  np.testing.assert_array_equal(stress.gaussian_noise(x, 16, 3), stress.gaussian_noise(x, 16, 3))
  np.testing.assert_array_equal(
      stress.gaussian_noise(x, 16, np.random.default_rng(3)), stress.gaussian_noise(x, 16, 3))
  assert not np.array_equal(stress.gaussian_noise(x, 16, 3), stress.gaussian_noise(x, 16, 4))


@pytest.mark.parametrize('sigma', [4.0, 16.0])
def test_gaussian_noise_moments_on_mid_grey(sigma):
  x = np.full((200, 32, 32, 1), 128, dtype=np.uint8)  # 204800 pixels
  noisy = stress.gaussian_noise(x, sigma, 0).astype(np.float64)
  # Standard error of the mean is sigma / 453 (< 0.04); rounding adds a
  # variance of 1/12, which moves the std by < 0.011 for sigma >= 4; the
  # standard error of the std is sigma / 640 (< 0.03).
  assert abs(noisy.mean() - 128) < 0.15
  assert abs(noisy.std() - sigma) < 0.1


def test_gaussian_noise_clips():
  x = np.full((100, 32, 32, 1), 128, dtype=np.uint8)
  noisy = stress.gaussian_noise(x, 64, 0)
  assert noisy.dtype == np.uint8
  # Level 255 takes all noise above 126.5 = 1.977 sigma: P = 0.0240 (sampling
  # error 0.0005); level 0 takes all noise below -127.5 = -1.992 sigma: P = 0.0232.
  assert 0.022 < np.mean(noisy == 255) < 0.026
  assert 0.021 < np.mean(noisy == 0) < 0.025


def test_uniform_noise_images():
  x = stress.uniform_noise_images((100, 32, 32, 1), 0)
  assert x.dtype == np.uint8 and x.shape == (100, 32, 32, 1)
  # Pixel std is 73.9; the mean over 102400 pixels has a standard error of 0.23.
  assert abs(x.mean() - 127.5) < 1.0
  assert np.unique(x).size == 256
  np.testing.assert_array_equal(x, stress.uniform_noise_images((100, 32, 32, 1), 0))


def test_constant_images():
  x = stress.constant_images((1000, 4, 4, 3), 0)
  assert x.dtype == np.uint8 and x.shape == (1000, 4, 4, 3)
  assert np.all(x == x[:, :1, :1, :1])
  # 1000 draws from 256 levels hit 256 * (1 - (255/256)^1000) = 251 of them on average.
  assert np.unique(x[:, 0, 0, 0]).size > 240
  spread = stress.constant_images((7, 2, 2, 1), levels=[0, 128, 255])
  assert spread[:, 0, 0, 0].tolist() == [0, 128, 255, 0, 128, 255, 0]
  assert np.all(spread == spread[:, :1, :1, :1])
  with pytest.raises(ValueError):
    stress.constant_images((2, 2, 2, 1), levels=[300])


def test_rejects_non_uint8_images():
  with pytest.raises(ValueError):
    stress.invert(np.zeros((1, 2, 2, 1), dtype=np.float32))
  with pytest.raises(ValueError):
    stress.invert(np.zeros((2, 2, 1), dtype=np.uint8))


@pytest.mark.parametrize('channels', [1, 3])
def test_suite_outputs_are_new_uint8_arrays_of_the_input_shape(channels):
  x = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, channels), dtype=np.uint8)
  before = x.copy()
  suite = stress.stress_suite(x, 0)
  assert list(suite) == list(stress.STRESS_TRANSFORMS)
  assert set(stress.DESCRIPTIONS) == set(stress.STRESS_TRANSFORMS)
  for name, images in suite.items():
    assert images.dtype == np.uint8, name
    assert images.shape == x.shape, name
    assert not np.shares_memory(images, x), name
  np.testing.assert_array_equal(x, before)
  assert not np.array_equal(suite['rotate90'], x)


def test_suite_rgb_transforms_act_per_channel():
  x = np.zeros((1, 2, 2, 3), dtype=np.uint8)
  x[..., 0] = [[1, 2], [3, 4]]
  x[..., 2] = 200
  suite = stress.stress_suite(x, 0, names=['rotate90', 'invert', 'brightness+64'])
  assert suite['rotate90'][0, :, :, 0].tolist() == [[2, 4], [1, 3]]
  assert np.all(suite['invert'][..., 1] == 255)
  assert np.all(suite['brightness+64'][..., 2] == 255)


def test_suite_subset_and_determinism():
  x = np.full((4, 8, 8, 1), 128, dtype=np.uint8)
  subset = stress.stress_suite(x, 7, names=['noise16', 'constant'])
  assert list(subset) == ['noise16', 'constant']
  full = stress.stress_suite(x, 7)
  # An entry's stream depends only on the seed and its name.
  np.testing.assert_array_equal(subset['noise16'], full['noise16'])
  np.testing.assert_array_equal(subset['constant'], full['constant'])
  assert not np.array_equal(full['noise4'], stress.stress_suite(x, 8, names=['noise4'])['noise4'])
  from_generator = stress.stress_suite(x, np.random.default_rng(1), names=['uniform_noise'])
  again = stress.stress_suite(x, np.random.default_rng(1), names=['uniform_noise'])
  np.testing.assert_array_equal(from_generator['uniform_noise'], again['uniform_noise'])


def test_suite_rejects_unknown_names():
  x = np.zeros((1, 4, 4, 1), dtype=np.uint8)
  with pytest.raises(ValueError, match='rotate90') as error:
    stress.stress_suite(x, 0, names=['rotate45', 'invert'])
  assert 'rotate45' in str(error.value)
