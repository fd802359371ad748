"""Invertible 1x1 convolutions: plain (slogdet) and LU-decomposed.

Convention used throughout the project: a 1x1 conv with weight W[in, out]
maps a pixel's channel vector x to y = x @ W, i.e. y_j = sum_c x_c W[c, j].
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.flows.actnorm import spatial_size
from glow_ood.flows.base import InvertibleLayer


def random_rotation(key: jax.Array, num_channels: int, dtype=jnp.float32) -> jax.Array:
  """A random orthogonal matrix (log|det| = 0), Glow's initialisation."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (num_channels, num_channels)))
  # Fix the sign ambiguity of QR so the result is Haar-distributed.
  q = q * jnp.sign(jnp.diag(r))[None, :]
  return q.astype(dtype)


def invconv_matrix(params: dict) -> jax.Array:
  """The [in, out] weight of either parametrisation, from its parameter dict."""
  if 'kernel' in params:
    return params['kernel']
  lu = params['lu']
  return InvConv1x1LU.compose(lu['p'], lu['l'], lu['u'], lu['sign'], lu['log_s'])


def _apply_1x1(x: jax.Array, w: jax.Array) -> jax.Array:
  return jnp.einsum('...c,cd->...d', x, w)


class InvConv1x1(InvertibleLayer):
  """Plain parametrisation: W is a free matrix, log|det W| from slogdet."""

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False):
    c = x.shape[-1]
    w = self.param('kernel', lambda k, shape: random_rotation(k, shape[0]), (c, c))
    w = w.astype(x.dtype)
    logdet = spatial_size(x) * jnp.linalg.slogdet(w)[1]
    logdet = jnp.broadcast_to(logdet, x.shape[:1])
    if inverse:
      return _apply_1x1(x, jnp.linalg.inv(w)), -logdet
    return _apply_1x1(x, w), logdet


class InvConv1x1LU(InvertibleLayer):
  """W = P L (U + diag(sign * exp(log_s))), log|det W| = sum(log_s).

  P and sign are fixed at initialisation. They are stored with the parameters so
  that a checkpoint is self-contained, but pass through stop_gradient: their
  gradient is exactly zero, so Adam/Adamax/RMSprop leave them unchanged.
  """

  def _lu_init(self, key, c):
    w0 = random_rotation(key, c, jnp.float32)
    p, l, u = jax.scipy.linalg.lu(w0)
    s = jnp.diag(u)
    return {'p': p, 'l': l, 'u': jnp.triu(u, 1), 'sign': jnp.sign(s), 'log_s': jnp.log(jnp.abs(s))}

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False):
    c = x.shape[-1]
    # One parameter pytree, so P, L, U and s all come from the same rotation.
    lu = self.param('lu', lambda key: self._lu_init(key, c))
    p = jax.lax.stop_gradient(lu['p'])
    sign = jax.lax.stop_gradient(lu['sign'])
    l, u, log_s = lu['l'], lu['u'], lu['log_s']
    w = self.compose(p, l, u, sign, log_s).astype(x.dtype)
    logdet = spatial_size(x) * jnp.sum(log_s)
    logdet = jnp.broadcast_to(logdet, x.shape[:1]).astype(x.dtype)
    if inverse:
      return _apply_1x1(x, jnp.linalg.inv(w)), -logdet
    return _apply_1x1(x, w), logdet

  @staticmethod
  def compose(p, l, u, sign, log_s):
    c = p.shape[0]
    eye = jnp.eye(c, dtype=l.dtype)
    lower = jnp.tril(l, -1) + eye
    upper = jnp.triu(u, 1) + jnp.diag(sign * jnp.exp(log_s))
    return p @ lower @ upper
