"""What a discrete-pixel model (PixelCNN++, the VAE) shares with the rest of the code.

Every kind receives the same input as Glow, dequantized images y = (x + u) / 2**n_bits
in [0, 1) with u in [0, 1)^D (glow_ood.likelihood), and reports log_px on that scale, so
bits/dim are computed one way for every kind. A discrete model reads the integer image
x back from y, models log P(x), and reports log P(x) + D n_bits log 2 (the density of
y that is constant on each pixel's bin); its samples are the bins' midpoints.
"""

import jax
import jax.numpy as jnp

from glow_ood import likelihood


def check_n_bits(n_bits, owner: str) -> None:
  if not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
    raise ValueError(f'{owner}.n_bits must be an integer in 1..8, got {n_bits!r}.')


def check_dequantized(y: jax.Array, owner: str, name: str = 'images') -> None:
  """y must be a float batch [B, H, W, C]; each model checks its own sizes after this."""
  if y.ndim != 4:
    raise ValueError(f'{owner} expects {name} as [batch, height, width, channels], got '
                     f'shape {y.shape}.')
  if not jnp.issubdtype(y.dtype, jnp.floating):
    raise TypeError(f'{owner} expects dequantized float {name} in [0, 1), got dtype '
                    f'{y.dtype}; reduce and dequantize integer pixels first '
                    '(glow_ood.likelihood.dequantize).')


def integer_pixels(y: jax.Array, n_bits: int) -> jax.Array:
  """Dequantized y in [0, 1) -> the integer pixels x = floor(y * 2**n_bits), int32.

  Clipped to the top level: float32 rounding of x + u can land exactly on 2**n_bits."""
  levels = 2 ** n_bits
  return jnp.clip(jnp.floor(y * levels), 0, levels - 1).astype(jnp.int32)


def midpoints(x_int: jax.Array, n_bits: int) -> jax.Array:
  """Integer pixels -> y = (x + 0.5) / 2**n_bits, each bin's centre (a sample's output)."""
  return (x_int.astype(jnp.float32) + 0.5) / 2 ** n_bits


def density_offset(num_dims: int, n_bits: int) -> float:
  """D n_bits log 2: log P(x) plus this is the log density of y on [0, 1)^D."""
  return -likelihood.discretization_constant(num_dims, n_bits)
