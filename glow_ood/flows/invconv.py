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


# The LU layer's fixed parts live in this variable collection, apart from 'params',
# so no optimizer transform (weight decay, noise, a user's own) can move them.
CONSTANTS = 'constants'


def invconv_matrix(params: dict, constants: dict | None = None) -> jax.Array:
  """The [in, out] weight of either parametrisation.

  params: the layer's 'params' subtree; constants: its 'constants' subtree (LU only).
  """
  if 'kernel' in params:
    return params['kernel']
  lu = params['lu']
  if constants is None or 'lu' not in constants:
    raise ValueError("The LU 1x1 conv's weight needs its fixed permutation and signs: pass "
                     f"the layer's {CONSTANTS!r} subtree as well as its 'params'.")
  fixed = constants['lu']
  return InvConv1x1LU.compose(fixed['p'], lu['l'], lu['u'], fixed['sign'], lu['log_s'])


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

  L, U and log_s are trainable ('params'). P and sign are fixed at initialisation
  and kept in the 'constants' collection: saved with the model, but out of reach
  of any optimizer, whose updates would otherwise make sum(log_s) stop being the
  log-det of W.
  """

  @staticmethod
  def decompose(w: jax.Array) -> dict[str, jax.Array]:
    """LU parts of an invertible [c, c] matrix, keyed as the layer stores them."""
    p, l, u = jax.scipy.linalg.lu(w)
    s = jnp.diag(u)
    return {'p': p, 'l': l, 'u': jnp.triu(u, 1), 'sign': jnp.sign(s),
            'log_s': jnp.log(jnp.abs(s))}

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False):
    c = x.shape[-1]
    if not self.is_initializing() and not self.has_variable(CONSTANTS, 'lu'):
      raise ValueError(
          f'InvConv1x1LU has no {CONSTANTS!r} collection (its fixed P and sign): apply the '
          f"model with all the variables init returned, not only {{'params': ...}}.")
    parts = {}

    def initial(key=None):
      # P, L, U and s all come from the same rotation, drawn with the params key.
      if not parts:
        parts.update(self.decompose(random_rotation(key, c, jnp.float32)))
      return parts

    lu = self.param('lu', lambda key: {k: initial(key)[k] for k in ('l', 'u', 'log_s')})
    fixed = self.variable(CONSTANTS, 'lu', lambda: {k: initial()[k] for k in ('p', 'sign')})
    p = jax.lax.stop_gradient(fixed.value['p'])
    sign = jax.lax.stop_gradient(fixed.value['sign'])
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
