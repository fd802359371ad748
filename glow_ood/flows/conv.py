"""3x3 and 1x1 convolutions written as matrix products, with hand-written gradients.

XLA's CPU backend is slow at products that contract over the long (batch x
pixels) axis of two row-major operands, which is the form every kernel
gradient takes, and slower still at the convolution kernel gradient, for which
it transposes the whole activation first. Here every product is an ordinary
[M, K] @ [K, N] one: where a kernel gradient needs an operand transposed, it is
the thin one (few channels) that is transposed, and its nine shifted copies are
built directly in that layout.

A 3x3 conv that reads few channels (the coupling net's first) gathers the
nine shifted inputs (patches) and mixes channels in one product. One that
writes few channels (the zero-initialised last) mixes channels first, into
nine partial outputs per pixel, and sums their shifted copies. Both give the
'SAME'-padded convolution's sum in another order.

Parameters are those of `flax.linen.Conv` (kernel [3, 3, in, out], bias [out],
same initialisers), so checkpoints and initial values do not change.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Tap t = 3 i + j reads the input at offset (i - 1, j - 1).
_TAPS = tuple((i, j) for i in range(3) for j in range(3))


def _shift(x: jax.Array, i: int, j: int, axes=(1, 2)) -> jax.Array:
  """out[h, w] = x[h + i - 1, w + j - 1], zero outside; (h, w) are `axes` of x."""
  pad = [(0, 0)] * x.ndim
  pad[axes[0]] = pad[axes[1]] = (1, 1)
  index = [slice(None)] * x.ndim
  index[axes[0]] = slice(i, i + x.shape[axes[0]])
  index[axes[1]] = slice(j, j + x.shape[axes[1]])
  return jnp.pad(x, pad)[tuple(index)]


def _patches(x: jax.Array, flip: bool = False) -> jax.Array:
  """[B, H, W, C] -> [B, H, W, 9 C], channels ordered (tap, c).

  flip=True shifts by the opposite offsets: the adjoint of the shifts.
  """
  return jnp.concatenate(
      [_shift(x, 2 - i, 2 - j) if flip else _shift(x, i, j) for i, j in _TAPS], axis=-1)


def _patches_t(x: jax.Array, flip: bool = False) -> jax.Array:
  """The transpose of `_patches(x, flip)` flattened, [9 C, B H W], built in that layout."""
  x_t = jnp.transpose(x, (3, 0, 1, 2))  # cheap: x has few channels
  rows = [_shift(x_t, 2 - i, 2 - j, (2, 3)) if flip else _shift(x_t, i, j, (2, 3))
          for i, j in _TAPS]
  rows = jnp.concatenate(rows, axis=0)
  return rows.reshape(rows.shape[0], -1)


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


@jax.custom_vjp
def _conv3x3_thin_input(x, kernel):
  cin, cout = kernel.shape[2:]
  return _patches(x) @ kernel.reshape(9 * cin, cout)


def _thin_input_fwd(x, kernel):
  return _conv3x3_thin_input(x, kernel), (x, kernel)


def _thin_input_bwd(residuals, g):
  x, kernel = residuals
  cin, cout = kernel.shape[2:]
  d_kernel = (_patches_t(x) @ _flat(g)).reshape(kernel.shape)
  d_patches = g @ kernel.reshape(9 * cin, cout).T
  _, patches_vjp = jax.vjp(_patches, x)
  return patches_vjp(d_patches)[0], d_kernel


_conv3x3_thin_input.defvjp(_thin_input_fwd, _thin_input_bwd)


def _taps_by_columns(kernel):
  """[3, 3, Cin, Cout] -> [Cin, 9 Cout], columns ordered (tap, out channel)."""
  cin, cout = kernel.shape[2:]
  return jnp.transpose(kernel.reshape(9, cin, cout), (1, 0, 2)).reshape(cin, 9 * cout)


@jax.custom_vjp
def _conv3x3_thin_output(x, kernel):
  cout = kernel.shape[-1]
  partial = (x @ _taps_by_columns(kernel)).reshape(x.shape[:3] + (9, cout))
  return sum(_shift(partial[..., t, :], i, j) for t, (i, j) in enumerate(_TAPS))


def _thin_output_fwd(x, kernel):
  return _conv3x3_thin_output(x, kernel), (x, kernel)


def _thin_output_bwd(residuals, g):
  x, kernel = residuals
  cin, cout = kernel.shape[2:]
  # The gradient of the partial outputs is g shifted back: the flipped patches.
  d_x = _patches(g, flip=True) @ _taps_by_columns(kernel).T
  d_columns_t = _patches_t(g, flip=True) @ _flat(x)  # [9 Cout, Cin]
  d_kernel = jnp.transpose(d_columns_t.reshape(9, cout, cin), (0, 2, 1)).reshape(kernel.shape)
  return d_x, d_kernel


_conv3x3_thin_output.defvjp(_thin_output_fwd, _thin_output_bwd)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 convolution of x [B, H, W, Cin] with kernel [3, 3, Cin, Cout], no bias."""
  cin, cout = kernel.shape[2:]
  if cin <= cout:
    return _conv3x3_thin_input(x, kernel)
  return _conv3x3_thin_output(x, kernel)


class MatmulConv(nn.Module):
  """Drop-in for `nn.Conv(features, (k, k), padding='SAME')`, k in {1, 3}."""
  features: int
  kernel_size: int = 3
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k not in (1, 3):
      raise ValueError(f'MatmulConv supports 1x1 and 3x3 kernels, got {k}.')
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32).astype(x.dtype)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(x.dtype)
    y = x @ kernel[0, 0] if k == 1 else conv3x3(x, kernel)
    return y + bias
