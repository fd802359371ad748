"""Priors on the latents: the split (factor-out) prior and the top prior.

Both are diagonal Gaussians with one interface:

    prior(context)                        -> (mean, log_std), each shaped like z
    prior.log_prob(z, ...)                -> log p(z) [B], summed over all but the batch axis
    prior.sample(key, ..., temperature)   -> z, the std scaled by temperature

where the context (and the extra arguments) is the kept half x_kept for
`SplitPrior` and the latent's shape for `TopPrior`. Their log densities are what
the paper calls log p(z); they are reported per level, separately from every log-det.
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.flows.coupling import ZeroInitConv


def gaussian_log_prob(z: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """Sum over all but the batch axis of log N(z; mean, exp(log_std)^2)."""
  per_dim = -0.5 * (math.log(2 * math.pi) + 2.0 * log_std
                    + jnp.square(z - mean) * jnp.exp(-2.0 * log_std))
  return jnp.sum(per_dim, axis=tuple(range(1, z.ndim)))


def _draw(key, mean, log_std, temperature):
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(log_std) * temperature * eps


class SplitPrior(nn.Module):
  """p(z | x_kept) of the half of a level's channels factored out, z, given the kept half.

  A zero-initialised conv of x_kept gives mean and log-std, so at initialisation
  the prior is N(0, I). `split` and `merge` cut a level's output into
  (x_kept, z) and join them back; they are a permutation, no log-det.
  """

  @staticmethod
  def split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, H, W, 2C] -> (x_kept, z), the first and second half of the channels."""
    c = x.shape[-1]
    if c % 2:
      raise ValueError(f'SplitPrior.split needs an even channel count, got shape {x.shape}.')
    return x[..., : c // 2], x[..., c // 2:]

  @staticmethod
  def merge(x_kept: jax.Array, z: jax.Array) -> jax.Array:
    """The inverse of `split`."""
    return jnp.concatenate([x_kept, z], axis=-1)

  @nn.compact
  def __call__(self, x_kept: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x_kept [B, H, W, C] -> (mean, log_std) of z, [B, H, W, C] each."""
    h = ZeroInitConv(2 * x_kept.shape[-1], name='conditioner')(x_kept)
    return h[..., 0::2], h[..., 1::2]

  def log_prob(self, z: jax.Array, x_kept: jax.Array) -> jax.Array:
    """log p(z | x_kept) [B]."""
    mean, log_std = self(x_kept)
    return gaussian_log_prob(z, mean, log_std)

  def sample(self, key: jax.Array, x_kept: jax.Array, temperature: float = 1.0) -> jax.Array:
    """z ~ p(z | x_kept), shaped like x_kept."""
    mean, log_std = self(x_kept)
    return _draw(key, mean, log_std, temperature)


class TopPrior(nn.Module):
  """p(z) of the last level's latent: N(0, I), or a learned mean/log-std per position."""
  learned: bool = True

  @nn.compact
  def __call__(self, shape_hwc: Sequence[int], dtype=jnp.float32):
    """The latent's shape [H, W, C] -> (mean, log_std), [H, W, C] each."""
    shape_hwc = tuple(shape_hwc)
    if not self.learned:
      zeros = jnp.zeros(shape_hwc, dtype)
      return zeros, zeros
    mean = self.param('mean', nn.initializers.zeros, shape_hwc)
    log_std = self.param('log_std', nn.initializers.zeros, shape_hwc)
    return mean.astype(dtype), log_std.astype(dtype)

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log p(z) [B] of z [B, H, W, C]."""
    mean, log_std = self(z.shape[1:], z.dtype)
    return gaussian_log_prob(z, mean[None], log_std[None])

  def sample(self, key: jax.Array, num: int, shape_hwc: Sequence[int],
             temperature: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """`num` draws of z, [num, H, W, C]."""
    mean, log_std = self(shape_hwc, dtype)
    shape = (num, *mean.shape)
    return _draw(key, jnp.broadcast_to(mean, shape), jnp.broadcast_to(log_std, shape),
                 temperature)
