"""Discrete-data likelihood bookkeeping: n-bit reduction, dequantization, bits/dim.

Integer pixels x in {0, ..., 2**n - 1} are mapped to y = (x + u) / 2**n with
u ~ U[0, 1)^D. A density p on y gives the bound (Theis et al. 2016)

    log P(x) >= E_u[log p(y)] - D * n * log 2,

where the constant comes from the 1 / 2**n rescaling of every one of the D
dimensions. The constant is per *image* (D = H * W * C), never per batch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

DEQUANTIZATION_NOISE = ('uniform', 'midpoint')


def _check_n_bits(n_bits: int) -> None:
  if not isinstance(n_bits, (int, np.integer)) or not 1 <= n_bits <= 8:
    raise ValueError(f'n_bits must be an integer in 1..8, got {n_bits!r}.')


def reduce_bits(x_uint8: jax.Array, n_bits: int) -> jax.Array:
  """Drops the low 8 - n bits: uint8 pixels -> int32 in [0, 2**n_bits)."""
  _check_n_bits(n_bits)
  if x_uint8.dtype != jnp.uint8:
    raise TypeError(
        f'reduce_bits expects uint8 pixels, got dtype {x_uint8.dtype}; '
        'pass the raw 8-bit images from glow_ood.data.')
  return jnp.right_shift(x_uint8.astype(jnp.int32), 8 - n_bits)


def dequantization_noise(key: jax.Array | None, shape, noise: str = 'uniform') -> jax.Array:
  """The offsets u added to integer pixels, float32 of `shape`.

  noise='uniform' draws u ~ U[0, 1 - 2**-16) (training, and the paper's evaluation);
  noise='midpoint' uses u = 1/2, a deterministic evaluation (key unused).
  """
  if noise == 'uniform':
    if key is None:
      raise ValueError("dequantize(noise='uniform') needs a PRNG key.")
    # u < 1 - 2**-16 keeps x + u below x + 1 in float32 for every 8-bit x, so
    # floor(y * 2**n) gives x back exactly (discrete models read their bin from y).
    return jax.random.uniform(key, shape, dtype=jnp.float32, maxval=1.0 - 2.0 ** -16)
  if noise == 'midpoint':
    return jnp.full(shape, 0.5, jnp.float32)
  raise ValueError(f'noise must be one of {DEQUANTIZATION_NOISE}, got {noise!r}.')


def dequantize(key: jax.Array | None, x_int: jax.Array, n_bits: int,
               noise: str = 'uniform') -> jax.Array:
  """Integer pixels -> y = (x + u) / 2**n in [0, 1), u from dequantization_noise."""
  _check_n_bits(n_bits)
  x = x_int.astype(jnp.float32)
  return (x + dequantization_noise(key, x.shape, noise)) / (2 ** n_bits)


def dequantize_uint8(key: jax.Array | None, x_uint8: jax.Array, n_bits: int,
                     noise: str = 'uniform') -> jax.Array:
  """Raw 8-bit pixels -> the model's input y in [0, 1): reduce_bits, then dequantize."""
  return dequantize(key, reduce_bits(x_uint8, n_bits), n_bits, noise=noise)


def reduce_bits_float(x_pixels: jax.Array, n_bits: int) -> jax.Array:
  """Float pixels on the 0..255 scale -> the n-bit scale [0, 2**n), differentiable.

  Integer pixels come out exactly as reduce_bits gives them (the low bits dropped; every
  step is exact in float32); in between, a straight-through floor keeps the slope
  1 / 2**(8 - n).
  """
  _check_n_bits(n_bits)
  scaled = jnp.asarray(x_pixels, jnp.float32) / 2 ** (8 - n_bits)
  if n_bits == 8:
    return scaled
  return scaled + jax.lax.stop_gradient(jnp.floor(scaled) - scaled)


def dequantize_pixels(key: jax.Array | None, x_pixels: jax.Array, n_bits: int,
                      noise: str = 'uniform') -> jax.Array:
  """Float pixels on the 0..255 scale -> the model's input y, differentiable in the pixels.

  reduce_bits_float, then the noise of dequantize: at integer pixels and the same key
  this equals dequantize_uint8 of the same image exactly.
  """
  reduced = reduce_bits_float(x_pixels, n_bits)
  return (reduced + dequantization_noise(key, reduced.shape, noise)) / (2 ** n_bits)


def discretization_constant(num_dims: int, n_bits: int) -> float:
  """The per-image -D * n * log 2 term that turns log p(y) into a bound on log P(x)."""
  _check_n_bits(n_bits)
  return -num_dims * n_bits * math.log(2.0)


def discrete_log_prob(log_py: jax.Array, num_dims: int, n_bits: int) -> jax.Array:
  """Lower bound on log P(x) (nats) from the continuous log density of y."""
  return log_py + discretization_constant(num_dims, n_bits)


def bits_per_dim(log_py: jax.Array, num_dims: int, n_bits: int) -> jax.Array:
  """-(log p(y) - D n log 2) / (D log 2): per image, same shape as log_py."""
  return -discrete_log_prob(log_py, num_dims, n_bits) / (num_dims * math.log(2.0))


def to_uint8(y: jax.Array, n_bits: int) -> np.ndarray:
  """Model-space images y (≈ [0, 1)) -> uint8 for viewing, at the model's bit depth."""
  _check_n_bits(n_bits)
  levels = 2 ** n_bits
  x_int = np.clip(np.floor(np.asarray(y, dtype=np.float64) * levels), 0, levels - 1)
  # Spread the n-bit levels over 0..255 so low-bit samples are visible.
  return np.round(x_int * (255.0 / (levels - 1))).astype(np.uint8)
