"""Bits/dim arithmetic on hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import likelihood


def test_uniform_density_on_unit_cube_gives_exactly_n_bits_per_dim():
  # log p(y) = 0 for the uniform density on [0, 1)^D, whatever D.
  for n_bits in (1, 5, 8):
    for num_dims in (1, 784, 3072):
      bpd = likelihood.bits_per_dim(jnp.zeros(3), num_dims, n_bits)
      np.testing.assert_allclose(bpd, np.full(3, n_bits), rtol=1e-6)


def test_bits_per_dim_hand_computed():
  # D = 2, n = 8, log p(y) = -1 nat: bpd = (1 + 2*8*ln 2) / (2 ln 2) = 8 + 1/(2 ln 2).
  bpd = likelihood.bits_per_dim(jnp.array([-1.0]), 2, 8)
  np.testing.assert_allclose(bpd, [8 + 1 / (2 * math.log(2))], rtol=1e-6)
  # A density twice as high everywhere saves exactly one bit per image, 1/D per dim.
  lo, hi = likelihood.bits_per_dim(jnp.array([0.0, math.log(2.0)]), 4, 3)
  np.testing.assert_allclose(lo - hi, 0.25, rtol=1e-6)


def test_discretization_constant_is_per_image_not_per_batch():
  log_py = jnp.array([10.0, 10.0, 10.0, 10.0])
  np.testing.assert_allclose(likelihood.discrete_log_prob(log_py, 784, 8),
                             np.full(4, 10.0 - 784 * 8 * math.log(2)), rtol=1e-6)
  # Batch size does not change any image's bits/dim.
  one = likelihood.bits_per_dim(log_py[:1], 784, 8)
  four = likelihood.bits_per_dim(log_py, 784, 8)
  np.testing.assert_allclose(four, np.repeat(one, 4), rtol=1e-7)


def test_reduce_bits_uses_2_to_the_n_bins():
  x = jnp.array([0, 7, 8, 127, 128, 255], dtype=jnp.uint8)
  np.testing.assert_array_equal(likelihood.reduce_bits(x, 5), [0, 0, 1, 15, 16, 31])
  np.testing.assert_array_equal(likelihood.reduce_bits(x, 8), np.asarray(x))
  np.testing.assert_array_equal(likelihood.reduce_bits(x, 1), [0, 0, 0, 0, 1, 1])
  with pytest.raises(TypeError, match='uint8'):
    likelihood.reduce_bits(x.astype(jnp.int32), 5)
  with pytest.raises(ValueError, match='n_bits'):
    likelihood.reduce_bits(x, 9)


def test_dequantize_stays_inside_each_pixels_bin():
  x = jnp.array([[0, 1, 30, 31]], dtype=jnp.int32)
  y = likelihood.dequantize(jax.random.key(0), jnp.tile(x, (1000, 1)), 5)
  assert float(y.min()) >= 0.0 and float(y.max()) < 1.0
  np.testing.assert_array_equal(jnp.floor(y * 32), jnp.tile(x, (1000, 1)))
  np.testing.assert_allclose(likelihood.dequantize(None, x, 5, 'midpoint'),
                             (np.asarray(x) + 0.5) / 32)
  with pytest.raises(ValueError, match='PRNG key'):
    likelihood.dequantize(None, x, 5)


def test_to_uint8_round_trips_n_bit_levels():
  levels = np.arange(32)
  y = (levels + 0.5) / 32
  out = likelihood.to_uint8(y, 5)
  np.testing.assert_array_equal(out, np.round(levels * 255 / 31).astype(np.uint8))
  assert out.dtype == np.uint8
