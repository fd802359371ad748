"""Geometry and channel conversions on hand-computed pixels."""

import numpy as np
import pytest

from glow_ood.data import preprocess


def test_pad_28_to_32_centres_with_zeros():
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  out = preprocess.preprocess(images, name='mnist', image_size=32, channels=1)
  assert out.shape == (2, 32, 32, 1) and out.dtype == np.uint8
  assert np.all(out[:, 2:30, 2:30] == 200)
  assert out.sum() == 200 * 2 * 28 * 28  # nothing but zeros around


def test_grey_to_rgb_repeats():
  grey = np.array([0, 17, 255], np.uint8).reshape(1, 1, 3, 1)
  rgb = preprocess.to_channels(grey, 3)
  np.testing.assert_array_equal(rgb[0, 0], [[0, 0, 0], [17, 17, 17], [255, 255, 255]])


def test_rgb_to_grey_bt601_rounded():
  rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [7, 7, 7]],
                 np.uint8).reshape(1, 1, 5, 3)
  # 0.299*255=76.245 -> 76; 0.587*255=149.685 -> 150; 0.114*255=29.07 -> 29;
  # 2.99 + 11.74 + 3.42 = 18.15 -> 18; a grey pixel stays itself.
  grey = preprocess.to_channels(rgb, 1)
  assert grey.shape == (1, 1, 5, 1) and grey.dtype == np.uint8
  np.testing.assert_array_equal(grey[0, 0, :, 0], [76, 150, 29, 18, 7])


def test_celeb_a_crop_then_resize():
  images = np.zeros((2, 218, 178, 3), np.uint8)
  images[:, 39:179, 19:159] = 100  # exactly the central 140 x 140
  out = preprocess.preprocess(images, name='celeb_a', image_size=32, channels=3)
  assert out.shape == (2, 32, 32, 3)
  assert np.all(out == 100)  # the crop kept only the inside


def test_centre_crop_and_downsize_by_area():
  # 64 -> 32 with 2x2 blocks of values {0, 4} averages to 2 exactly.
  images = np.zeros((1, 64, 64, 1), np.uint8)
  images[:, ::2, ::2] = 4
  images[:, 1::2, 1::2] = 4
  out = preprocess.fit_to_size(images, 32)
  assert out.shape == (1, 32, 32, 1) and np.all(out == 4 // 2)
  wide = np.arange(40 * 60, dtype=np.uint32).reshape(1, 40, 60, 1).astype(np.uint8)
  np.testing.assert_array_equal(preprocess.centre_crop(wide, 40, 40), wide[:, :, 10:50])
  assert preprocess.fit_to_size(wide, 16).shape == (1, 16, 16, 1)


def test_upsizes_small_images_beyond_pad_range():
  out = preprocess.fit_to_size(np.full((1, 8, 8, 3), 50, np.uint8), 32)
  assert out.shape == (1, 32, 32, 3) and np.all(out == 50)


def test_random_flip_flips_whole_images_only():
  images = np.arange(6 * 2 * 3, dtype=np.uint8).reshape(6, 2, 3, 1)
  out = preprocess.random_flip(images, np.random.default_rng(0))
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  kept = [np.array_equal(o, i) for o, i in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)
  assert np.array_equal(images, np.arange(36).reshape(6, 2, 3, 1))  # input untouched


def test_rejects_float_images():
  with pytest.raises(ValueError, match='uint8'):
    preprocess.preprocess(np.zeros((1, 28, 28, 1)), name='mnist', image_size=32,
                          channels=1)
