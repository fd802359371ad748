"""Squeeze: 2x2 space-to-depth, [B, H, W, C] -> [B, H/2, W/2, 4C].

Output channel (dh * 2 + dw) * C + c holds input pixel (2i + dh, 2j + dw),
channel c. A permutation, so log|det| = 0.
"""

import jax
import jax.numpy as jnp

from glow_ood.flows.base import InvertibleLayer


def squeeze(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'squeeze needs even height and width, got shape {x.shape}.')
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  b, h, w, c4 = x.shape
  if c4 % 4:
    raise ValueError(f'unsqueeze needs channels divisible by 4, got shape {x.shape}.')
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


class Squeeze(InvertibleLayer):
  """The squeeze as a flow layer, with the (zero) log-det of the common interface."""

  def __call__(self, x, inverse: bool = False):
    zeros = jnp.zeros(x.shape[:1], x.dtype)
    return (unsqueeze(x) if inverse else squeeze(x)), zeros
