"""Lossless code lengths: bounds on blank and noise images, ordering, exact round trips."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from glow_ood.analysis import complexity

HAS_JPEG2000 = 'jpeg2000' in complexity.available_compressors()
needs_jpeg2000 = pytest.mark.skipif(not HAS_JPEG2000, reason="Pillow lacks JPEG 2000 support")


def _noise(num_images, channels=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(num_images, 32, 32, channels), dtype=np.uint8)


def _constant(levels, channels=1):
  return np.stack([np.full((32, 32, channels), level, dtype=np.uint8) for level in levels])


def _smooth(channels=1):
  """One slowly varying 32x32 pattern, a stand-in for a natural image."""
  rows, cols = np.mgrid[:32, :32]
  pattern = np.rint(128 + 60 * np.sin(cols / 5) * np.cos(rows / 7)).astype(np.uint8)
  return np.repeat(pattern[None, :, :, None], channels, axis=-1)


def test_png_bounds_on_blank_and_noise():
  blank = complexity.bits_per_dim(_constant([0, 1, 128, 255]), 'png')
  # The container alone is 57 bytes of PNG framing + 6 of zlib framing =
  # 504 bits = 0.49 bits/dim at 32x32; a constant image codes in ~12 more bytes.
  assert np.all(blank > 0.49)
  assert np.all(blank < 0.7)
  assert np.all(complexity.bits_per_dim(_constant([1, 128, 255]), 'png', subtract_header=True) < 0.1)
  # Noise does not compress: DEFLATE stores it (8 bits/dim) with a filter
  # byte per row (0.25 bits/dim) and the container on top (~0.5 bits/dim).
  noise = complexity.bits_per_dim(_noise(20), 'png')
  assert np.all((noise > 7.5) & (noise < 9.0))


def test_zlib_bounds_on_blank_and_noise():
  # No container: 1024 bytes of noise are stored with 5 bytes of block framing.
  noise = complexity.bits_per_dim(_noise(20), 'zlib')
  assert np.all((noise >= 8.0) & (noise < 8.1))
  assert np.all(complexity.bits_per_dim(_constant([0, 77, 255]), 'zlib') < 0.1)


@pytest.mark.parametrize('compressor', complexity.available_compressors())
def test_ordering_noise_smooth_constant(compressor):
  noise = complexity.code_length_bits(_noise(5), compressor)
  smooth = complexity.code_length_bits(_smooth(), compressor)
  constant = complexity.code_length_bits(_constant([0, 128]), compressor)
  assert noise.min() > smooth.max() > constant.max()


@pytest.mark.parametrize('compressor', complexity.available_compressors())
@pytest.mark.parametrize('channels', [1, 3])
def test_shape_dtype_and_bits_per_dim(compressor, channels):
  images = np.concatenate([_noise(3, channels), _smooth(channels)])
  bits = complexity.code_length_bits(images, compressor)
  assert bits.shape == (4,) and bits.dtype == np.float64
  assert np.all(bits % 8 == 0)  # whole bytes
  np.testing.assert_allclose(complexity.bits_per_dim(images, compressor), bits / (32 * 32 * channels))
  header = complexity.header_bits(compressor, (32, 32, channels))
  assert header == complexity.code_length_bits(np.zeros((1, 32, 32, channels), np.uint8), compressor)[0]
  np.testing.assert_allclose(
      complexity.bits_per_dim(images, compressor, subtract_header=True), (bits - header) / (32 * 32 * channels))
  assert complexity.code_length_bits(images[:0], compressor).shape == (0,)


def test_rgb_noise_costs_three_times_grey():
  grey = complexity.code_length_bits(_noise(3, 1), 'zlib')
  rgb = complexity.code_length_bits(_noise(3, 3), 'zlib')
  # Stored DEFLATE: 8 bits per byte plus framing, for 1024 vs 3072 bytes.
  np.testing.assert_allclose(rgb / grey, 3.0, rtol=0.01)
  assert np.all(complexity.bits_per_dim(_noise(3, 3), 'png') > 7.5)


@pytest.mark.parametrize('channels, mode', [(1, 'L'), (3, 'RGB')])
def test_png_round_trip_is_lossless(channels, mode):
  for image in np.concatenate([_noise(2, channels), _smooth(channels)]):
    decoded = Image.open(io.BytesIO(complexity.encode(image, 'png')))
    assert decoded.format == 'PNG' and decoded.mode == mode
    np.testing.assert_array_equal(np.asarray(decoded).reshape(image.shape), image)


@needs_jpeg2000
@pytest.mark.parametrize('channels, mode', [(1, 'L'), (3, 'RGB')])
def test_jpeg2000_round_trip_is_lossless(channels, mode):
  for image in np.concatenate([_noise(2, channels), _smooth(channels), _constant([200], channels)]):
    decoded = Image.open(io.BytesIO(complexity.encode(image, 'jpeg2000')))
    assert decoded.format == 'JPEG2000' and decoded.mode == mode
    np.testing.assert_array_equal(np.asarray(decoded).reshape(image.shape), image)


def test_zlib_round_trip_is_lossless():
  image = _noise(1, 3)[0]
  decoded = zlib.decompress(complexity.encode(image, 'zlib'), wbits=-15)
  np.testing.assert_array_equal(np.frombuffer(decoded, np.uint8).reshape(image.shape), image)


def test_unknown_compressor_lists_available():
  with pytest.raises(ValueError, match='png') as error:
    complexity.code_length_bits(_constant([0]), 'webp')
  for name in complexity.available_compressors():
    assert name in str(error.value)


def test_missing_jpeg2000_is_reported(monkeypatch):
  monkeypatch.setattr(complexity, '_is_available', lambda name: name != 'jpeg2000')
  assert complexity.available_compressors() == ['png', 'zlib']
  with pytest.raises(ValueError, match='JPEG 2000'):
    complexity.code_length_bits(_constant([0]), 'jpeg2000')


def test_rejects_bad_images():
  with pytest.raises(ValueError):
    complexity.code_length_bits(np.zeros((1, 4, 4, 1), np.float32))
  with pytest.raises(ValueError):
    complexity.code_length_bits(np.zeros((1, 4, 4, 2), np.uint8))
