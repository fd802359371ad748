"""Priors on the latents: the split (factor-out) prior and the top prior.

Both are diagonal Gaussians. Their log densities are what the paper calls
log p(z); they are reported per level, separately from every log-det.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.flows.coupling import ZeroInitConv


def gaussian_log_prob(z: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """Sum over all but the batch axis of log N(z; mean, exp(log_std)^2)."""
  per_dim = -0.5 * (math.log(2 * math.pi) + 2.0 * log_std
                    + jnp.square(z - mean) * jnp.exp(-2.0 * log_std))
  return jnp.sum(per_dim, axis=tuple(range(1, z.ndim)))


class SplitPrior(nn.Module):
  """Factors out the second half of the channels, z, under N(mean(x_kept), std(x_kept)).

  A zero-initialised conv of the kept half gives mean and log-std, so at
  initialisation the prior is N(0, I).
  """

  def _params_of(self, x_kept, num_z_channels):
    h = ZeroInitConv(2 * num_z_channels, name='conditioner')(x_kept)
    return h[..., 0::2], h[..., 1::2]

  @nn.compact
  def __call__(self, x, z=None, *, inverse: bool = False, key=None, temperature: float = 1.0):
    if not inverse:
      c = x.shape[-1]
      if c % 2:
        raise ValueError(f'SplitPrior needs an even channel count, got shape {x.shape}.')
      x_kept, z = x[..., : c // 2], x[..., c // 2:]
      mean, log_std = self._params_of(x_kept, z.shape[-1])
      return x_kept, z, gaussian_log_prob(z, mean, log_std)
    # inverse: x is the kept half; z given, or drawn at a temperature.
    mean, log_std = self._params_of(x, x.shape[-1])
    if z is None:
      eps = jax.random.normal(key, mean.shape, mean.dtype)
      z = mean + jnp.exp(log_std) * temperature * eps
    return jnp.concatenate([x, z], axis=-1)

  def forward(self, x):
    """x -> (x_kept, z, log p(z | x_kept))."""
    return self(x)

  def inverse(self, x_kept, z):
    return self(x_kept, z, inverse=True)

  def sample(self, x_kept, key, temperature: float = 1.0):
    return self(x_kept, None, inverse=True, key=key, temperature=temperature)


class TopPrior(nn.Module):
  """Prior of the last level's latent: N(0, I), or per-position learned mean/log-std."""
  learned: bool = True

  @nn.compact
  def __call__(self, shape_hwc, dtype=jnp.float32):
    if not self.learned:
      zeros = jnp.zeros(shape_hwc, dtype)
      return zeros, zeros
    mean = self.param('mean', nn.initializers.zeros, shape_hwc)
    log_std = self.param('log_std', nn.initializers.zeros, shape_hwc)
    return mean.astype(dtype), log_std.astype(dtype)

  def log_prob(self, z):
    mean, log_std = self(z.shape[1:], z.dtype)
    return gaussian_log_prob(z, mean[None], log_std[None])

  def sample(self, key, num, shape_hwc, temperature: float = 1.0, dtype=jnp.float32):
    mean, log_std = self(tuple(shape_hwc), dtype)
    eps = jax.random.normal(key, (num, *shape_hwc), dtype)
    return mean[None] + jnp.exp(log_std)[None] * temperature * eps
