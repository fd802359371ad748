"""ActNorm: per-channel affine map with data-dependent initialisation."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.flows.base import InvertibleLayer


def spatial_size(x: jax.Array) -> int:
  """Number of positions a per-channel map is applied at (H * W for NHWC)."""
  size = 1
  for d in x.shape[1:-1]:
    size *= d
  return size


class ActNorm(InvertibleLayer):
  """y = (x + bias) * exp(log_scale), per channel.

  On `init` through `forward`, bias and log_scale are set so that y has zero
  mean and unit variance per channel on the initialising batch. The statistics
  are reductions over the whole batch array: under `jax.jit` with the batch
  sharded over a device mesh they are those of the global batch, not of one
  device's slice.
  """
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False):
    num_channels = x.shape[-1]
    reduce_axes = tuple(range(x.ndim - 1))
    # Data-dependent init only makes sense from data; an inverse-first init
    # (e.g. sampling from a fresh model) starts from the identity.
    data_init = not inverse
    x_stats = jax.lax.stop_gradient(x)

    def init_bias(_, shape, dtype=jnp.float32):
      if not data_init:
        return jnp.zeros(shape, dtype)
      return (-jnp.mean(x_stats, axis=reduce_axes)).astype(dtype)

    def init_log_scale(_, shape, dtype=jnp.float32):
      if not data_init:
        return jnp.zeros(shape, dtype)
      std = jnp.std(x_stats, axis=reduce_axes)
      return (-jnp.log(std + self.eps)).astype(dtype)

    bias = self.param('bias', init_bias, (num_channels,))
    log_scale = self.param('log_scale', init_log_scale, (num_channels,))
    logdet = spatial_size(x) * jnp.sum(log_scale)
    logdet = jnp.broadcast_to(logdet, x.shape[:1])
    if inverse:
      return x * jnp.exp(-log_scale) - bias, -logdet
    return (x + bias) * jnp.exp(log_scale), logdet
