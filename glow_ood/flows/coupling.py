"""Coupling layers (affine, additive) and the networks that condition them.

The input is split on channels into x_a (first half, passed through) and x_b
(second half, transformed as a function of x_a). The conditioning network's
last layer is zero-initialised, so a new additive coupling is the identity and
a new affine coupling scales x_b by exactly sigmoid(2).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.flows.base import InvertibleLayer
from glow_ood.flows.conv import MatmulConv

COUPLING_NETS = ('glow', 'highway')


class ZeroInitConv(nn.Module):
  """3x3 conv, zero-initialised, with a per-channel learned output gain.

  The gain exp(log_gain * gain_scale) lets the output grow fast once training
  starts, without changing the identity initialisation.
  """
  features: int
  gain_scale: float = 3.0
  channels_first: bool = False  # x and the output laid out [C, B, H, W]

  @nn.compact
  def __call__(self, x):
    # Named as nn.Conv would be, so parameter trees match across formulations.
    y = MatmulConv(self.features, 3, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, channels_first=self.channels_first,
                   name='Conv_0')(x)
    log_gain = self.param('log_gain', nn.initializers.zeros, (self.features,))
    gain = jnp.exp(log_gain * self.gain_scale).astype(x.dtype)
    return y * (gain.reshape((-1,) + (1,) * (x.ndim - 1)) if self.channels_first else gain)


class GlowCouplingNet(nn.Module):
  """Glow's network: conv3x3 - ReLU - conv1x1 - ReLU - zero-init conv3x3.

  Computed channels first ([C, B, H, W], glow_ood/flows/conv.py): only the thin
  input and output are transposed, and every product and kernel gradient is a
  plain one. Parameters and values are those of the channels-last form.
  """
  hidden_channels: int
  out_channels: int
  channels_first: bool = True

  @nn.compact
  def __call__(self, x):
    cf = self.channels_first
    h = jnp.transpose(x, (3, 0, 1, 2)) if cf else x
    h = nn.relu(MatmulConv(self.hidden_channels, 3, channels_first=cf, name='Conv_0')(h))
    h = nn.relu(MatmulConv(self.hidden_channels, 1, channels_first=cf, name='Conv_1')(h))
    y = ZeroInitConv(self.out_channels, channels_first=cf)(h)
    return jnp.transpose(y, (1, 2, 3, 0)) if cf else y


class HighwayCouplingNet(nn.Module):
  """Input conv, then blocks h <- t * relu(conv(h)) + (1 - t) * h with a learned gate t."""
  hidden_channels: int
  out_channels: int
  num_blocks: int = 3

  @nn.compact
  def __call__(self, x):
    conv = lambda f: nn.Conv(f, (3, 3), padding='SAME', dtype=x.dtype, param_dtype=jnp.float32)
    h = nn.relu(conv(self.hidden_channels)(x))
    for _ in range(self.num_blocks):
      candidate = nn.relu(conv(self.hidden_channels)(h))
      # Bias the gate towards carrying h through, so deep stacks start near identity.
      gate = nn.sigmoid(conv(self.hidden_channels)(h) - 1.0)
      h = gate * candidate + (1.0 - gate) * h
    return ZeroInitConv(self.out_channels)(h)


def make_coupling_net(kind: str, hidden_channels: int, out_channels: int,
                      num_highway_blocks: int = 3) -> nn.Module:
  """The conditioning network of a coupling, as a module."""
  if kind == 'glow':
    return GlowCouplingNet(hidden_channels, out_channels)
  if kind == 'highway':
    return HighwayCouplingNet(hidden_channels, out_channels, num_highway_blocks)
  raise ValueError(f'coupling_net must be one of {COUPLING_NETS}, got {kind!r}.')


def _split_channels(x):
  c = x.shape[-1]
  if c < 2:
    raise ValueError(f'A coupling needs at least 2 channels, got input of shape {x.shape}.')
  return x[..., : c // 2], x[..., c // 2:]


class _Coupling(InvertibleLayer):
  """Shared by both couplings: the conditioning network's settings."""
  net: str = 'glow'             # 'glow' | 'highway'
  hidden_channels: int = 512
  num_highway_blocks: int = 3
  net_dtype: str = 'float32'    # the net's activations; its params stay float32

  def conditioner(self, x_a, out_channels):
    # Mixed precision stops at the net's output: shift, scale and log-dets are
    # formed in the flow's own dtype.
    net = make_coupling_net(self.net, self.hidden_channels, out_channels,
                            self.num_highway_blocks)
    # 'float32' keeps the flow's own precision (float64 in the exactness tests).
    net_in = x_a if self.net_dtype == 'float32' else x_a.astype(self.net_dtype)
    return net(net_in).astype(x_a.dtype)


class AffineCoupling(_Coupling):
  """y_b = (x_b + shift) * scale, scale = sigmoid(h + 2); log|det| = sum log scale."""

  @nn.compact
  def __call__(self, x, inverse: bool = False):
    x_a, x_b = _split_channels(x)
    h = self.conditioner(x_a, 2 * x_b.shape[-1])
    shift, pre_scale = h[..., 0::2], h[..., 1::2]
    log_scale = jax.nn.log_sigmoid(pre_scale + 2.0)
    logdet = jnp.sum(log_scale, axis=tuple(range(1, x.ndim)))
    if inverse:
      x_b = x_b * jnp.exp(-log_scale) - shift
      return jnp.concatenate([x_a, x_b], axis=-1), -logdet
    x_b = (x_b + shift) * jnp.exp(log_scale)
    return jnp.concatenate([x_a, x_b], axis=-1), logdet


class AdditiveCoupling(_Coupling):
  """y_b = x_b + shift(x_a): volume preserving, log|det| = 0 (CV-Glow)."""

  @nn.compact
  def __call__(self, x, inverse: bool = False):
    x_a, x_b = _split_channels(x)
    shift = self.conditioner(x_a, x_b.shape[-1])
    x_b = x_b - shift if inverse else x_b + shift
    return jnp.concatenate([x_a, x_b], axis=-1), jnp.zeros(x.shape[:1], x.dtype)
