"""Pixel statistics on hand-computed tiny arrays."""

import numpy as np
import pytest

from glow_ood.analysis import statistics


def test_to_model_scale_with_bit_reduction():
  x = np.array([0, 7, 8, 128, 255], dtype=np.uint8)
  np.testing.assert_allclose(statistics.to_model_scale(x), [0, 7 / 256, 8 / 256, 0.5, 255 / 256])
  # 5 bits: floor(x / 8) / 32.
  np.testing.assert_allclose(statistics.to_model_scale(x, n_bits=5), [0, 0, 1 / 32, 0.5, 31 / 32])
  floats = np.array([0.1, 0.9], dtype=np.float32)
  np.testing.assert_allclose(statistics.to_model_scale(floats, n_bits=5), floats)
  with pytest.raises(ValueError):
    statistics.to_model_scale(x, n_bits=9)


def test_per_image_channel_stats():
  x = np.zeros((2, 2, 2, 2), dtype=np.uint8)
  x[0, :, :, 0] = [[0, 0], [128, 128]]  # pixels 0, 0, .5, .5: mean .25, var .0625
  x[0, :, :, 1] = 64  # constant .25: var 0
  x[1, :, :, 0] = [[0, 64], [128, 192]]  # 0, .25, .5, .75: mean .375, var .078125
  means, variances = statistics.per_image_channel_stats(x)
  assert means.shape == variances.shape == (2, 2)
  np.testing.assert_allclose(means, [[0.25, 0.25], [0.375, 0.0]])
  np.testing.assert_allclose(variances, [[0.0625, 0.0], [0.078125, 0.0]])


def test_dataset_pixel_stats_streamed_equals_whole():
  x = np.zeros((3, 1, 2, 1))
  x[:, 0, 0, 0] = [1.0, 2.0, 4.0]  # mean 7/3, var ((4/3)^2 + (1/3)^2 + (5/3)^2) / 3 = 14/9
  x[:, 0, 1, 0] = [5.0, 5.0, 5.0]
  mean, var, count = statistics.dataset_pixel_stats(x)
  assert count == 3
  np.testing.assert_allclose(mean[..., 0], [[7 / 3, 5.0]])
  np.testing.assert_allclose(var[..., 0], [[14 / 9, 0.0]])
  mean_s, var_s, count_s = statistics.dataset_pixel_stats(iter([x[:2], x[2:]]))
  assert count_s == 3
  np.testing.assert_allclose(mean_s, mean)
  np.testing.assert_allclose(var_s, var)


def test_dataset_pixel_stats_matches_numpy_on_random_batches():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(50, 3, 3, 2), dtype=np.uint8)
  mean, var, _ = statistics.dataset_pixel_stats([x[:7], x[7:30], x[30:]], n_bits=5)
  scaled = (x // 8) / 32.0
  np.testing.assert_allclose(mean, scaled.mean(axis=0))
  np.testing.assert_allclose(var, scaled.var(axis=0))


def test_channel_sums_and_difference():
  var_q = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # [1, 2, 2]
  var_p = np.full((1, 2, 2), 0.5)
  np.testing.assert_allclose(statistics.channel_sums(var_q), [4.0, 6.0])
  np.testing.assert_allclose(statistics.channel_variance_sum_difference(var_q, var_p), [3.0, 5.0])
