"""The pixel conventions PixelCNN++ and the VAE share, on cases with known answers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import likelihood
from glow_ood.models import discrete_images
from glow_ood.models.pixelcnn import PixelCNNPP
from glow_ood.models.vae import VAE


@pytest.mark.parametrize('n_bits', [1, 5, 8])
def test_integer_pixels_undo_any_dequantization(n_bits):
  x = jnp.arange(2 ** n_bits, dtype=jnp.int32).reshape(1, 1, -1, 1)
  for noise in (0.0, 0.5, 1.0 - 2.0 ** -16):
    y = (x.astype(jnp.float32) + noise) / 2 ** n_bits
    np.testing.assert_array_equal(discrete_images.integer_pixels(y, n_bits), x)
  # float32 rounding of x + u can reach 2**n_bits exactly: read back as the top level.
  np.testing.assert_array_equal(discrete_images.integer_pixels(jnp.ones((1,)), n_bits),
                                [2 ** n_bits - 1])
  # The evaluation's own dequantization, both noises, reads back the reduced pixels.
  raw = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1)
  for noise in ('uniform', 'midpoint'):
    y = likelihood.dequantize_uint8(jax.random.PRNGKey(0), raw, n_bits, noise)
    np.testing.assert_array_equal(discrete_images.integer_pixels(y, n_bits),
                                  likelihood.reduce_bits(raw, n_bits))


def test_midpoints_are_bin_centres_and_read_back():
  x = jnp.array([0, 1, 31], jnp.int32)
  np.testing.assert_allclose(discrete_images.midpoints(x, 5), [0.5 / 32, 1.5 / 32, 31.5 / 32])
  np.testing.assert_array_equal(
      discrete_images.integer_pixels(discrete_images.midpoints(x, 5), 5), x)


def test_density_offset_turns_log_p_x_into_bits_per_dim():
  # A uniform model: log P(x) = -D n log 2, so the density of y is 1 and bits/dim = n.
  num_dims, n_bits = 12, 5
  log_p_x = -num_dims * n_bits * math.log(2.0)
  offset = discrete_images.density_offset(num_dims, n_bits)
  assert offset == pytest.approx(num_dims * n_bits * math.log(2.0))
  assert float(likelihood.bits_per_dim(jnp.array(log_p_x + offset), num_dims, n_bits)) == (
      pytest.approx(n_bits))


def test_bad_input_is_named_with_its_model():
  with pytest.raises(ValueError, match=r'VAE.n_bits must be an integer in 1..8, got 9'):
    discrete_images.check_n_bits(9, 'VAE')
  with pytest.raises(TypeError, match='PixelCNNPP expects dequantized float y'):
    discrete_images.check_dequantized(jnp.zeros((1, 4, 4, 1), jnp.uint8), 'PixelCNNPP', 'y')
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    discrete_images.check_dequantized(jnp.zeros((4, 4, 1)), 'VAE')
  # Through the models themselves.
  uint8_batch = jnp.zeros((1, 8, 8, 1), jnp.uint8)
  with pytest.raises(TypeError, match='VAE expects dequantized float'):
    VAE(image_shape=(8, 8, 1), latent_dim=2, num_filters=4, num_blocks=1).init(
        {'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}, uint8_batch)
  with pytest.raises(ValueError, match='PixelCNNPP.n_bits must be an integer in 1..8'):
    PixelCNNPP(num_resnets=1, num_filters=4, num_logistic_mix=1, n_bits=0).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
