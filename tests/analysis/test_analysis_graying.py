"""Graying: the blend, its effect on variance, and the log p curve."""

import numpy as np
import pytest

from glow_ood.analysis import graying, statistics


def test_blend_by_hand():
  x_uint8 = np.array([0, 255], dtype=np.uint8)
  np.testing.assert_allclose(graying.blend_toward_grey(x_uint8, 0.5), [64.0, 191.5])
  rounded = graying.blend_toward_grey(x_uint8, 0.5, round_to_input_dtype=True)
  assert rounded.dtype == np.uint8
  np.testing.assert_array_equal(rounded, [64, 192])
  x_float = np.array([0.0, 1.0])
  np.testing.assert_allclose(graying.blend_toward_grey(x_float, 0.25), [0.125, 0.875])
  np.testing.assert_allclose(graying.blend_toward_grey(x_float, 1.0, grey=0.2), [0.2, 0.2])
  np.testing.assert_allclose(graying.blend_toward_grey(x_float, 0.0), x_float)
  with pytest.raises(ValueError):
    graying.blend_toward_grey(x_float, 1.5)


@pytest.mark.parametrize('alpha', [0.0, 0.3, 0.8])
def test_blend_scales_pixel_variance_by_one_minus_alpha_squared(alpha):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(20, 2, 3, 3), dtype=np.uint8)
  _, var, _ = statistics.dataset_pixel_stats(x.astype(np.float64))
  _, var_blended, _ = statistics.dataset_pixel_stats(graying.blend_toward_grey(x, alpha))
  np.testing.assert_allclose(var_blended, (1 - alpha) ** 2 * var)


def test_graying_curve_by_hand():
  images = np.array([0.0, 0.5]).reshape(2, 1, 1, 1)
  score_fn = lambda batch: -np.sum((batch - 0.5) ** 2, axis=(1, 2, 3))  # peaks at grey
  for batch_size in (None, 1):
    curve = graying.graying_curve(score_fn, images, [0.0, 0.5, 1.0], batch_size=batch_size)
    np.testing.assert_allclose(curve['alpha'], [0.0, 0.5, 1.0])
    # alpha=0: scores -0.25, 0; alpha=0.5: image 0 -> 0.25, scores -0.0625, 0; alpha=1: 0, 0.
    np.testing.assert_allclose(curve['mean_log_prob'], [-0.125, -0.03125, 0.0])
    # Two scores: stderr = |a - b| / 2.
    np.testing.assert_allclose(curve['stderr'], [0.125, 0.03125, 0.0])
