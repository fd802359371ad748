"""Discretized logistic likelihoods of n-bit pixels (Salimans et al. 2017).

Pixel values x in {0, ..., 2**n - 1} sit at centres c = 2x / (2**n - 1) - 1 on
[-1, 1], each bin of half-width 1 / (2**n - 1). A logistic with mean m and
scale s = exp(log_scale) gives bin x the mass

    P(x) = sigmoid((c + hw - m) / s) - sigmoid((c - hw - m) / s),

with the edge bins left open (x = 0 takes everything below, x = 2**n - 1
everything above), so the probabilities of all 2**n values sum to exactly one
and the likelihood of an image is exact, not a bound.
"""

import jax
import jax.numpy as jnp


def pixel_centres(x_int: jax.Array, n_bits: int) -> jax.Array:
  """Integer pixels -> bin centres on [-1, 1]."""
  return 2.0 * x_int.astype(jnp.float32) / (2 ** n_bits - 1) - 1.0


def discretized_logistic_log_prob(x_int: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  n_bits: int = 8) -> jax.Array:
  """Elementwise log P(x) in nats of integer pixels under a discretized logistic.

  x_int: integer pixels in [0, 2**n_bits); mean, log_scale: broadcastable, on the
  [-1, 1] scale.
  """
  top = 2 ** n_bits - 1
  half_width = 1.0 / top
  centred = pixel_centres(x_int, n_bits) - mean
  inv_scale = jnp.exp(-log_scale)
  upper = inv_scale * (centred + half_width)
  lower = inv_scale * (centred - half_width)
  # log sigmoid(upper) for the lowest bin; log(1 - sigmoid(lower)) for the highest.
  log_cdf_upper = jax.nn.log_sigmoid(upper)
  log_survival_lower = -jax.nn.softplus(lower)
  # Interior bins: log(sigmoid(upper) - sigmoid(lower)), stable when both are near 1 or 0:
  # sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)).
  log_interior = (jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower)
                  + jnp.log(-jnp.expm1(lower - upper)))
  return jnp.where(x_int <= 0, log_cdf_upper,
                   jnp.where(x_int >= top, log_survival_lower, log_interior))


def sample_discretized_logistic(key: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                n_bits: int = 8) -> jax.Array:
  """Integer pixels drawn from the discretized logistic (rounded to the nearest bin)."""
  u = jax.random.uniform(key, jnp.shape(mean), minval=1e-5, maxval=1.0 - 1e-5)
  value = mean + jnp.exp(log_scale) * (jnp.log(u) - jnp.log1p(-u))
  top = 2 ** n_bits - 1
  return jnp.clip(jnp.round((value + 1.0) * top / 2.0), 0, top).astype(jnp.int32)
