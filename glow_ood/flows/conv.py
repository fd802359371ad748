"""3x3 and 1x1 convolutions written as matrix products.

XLA's CPU backend is slow at products that contract over the long (batch x
pixels) axis of two row-major operands, which is the form every kernel
gradient takes under autodiff, and slower still at a convolution's kernel
gradient, for which it first transposes the whole activation. The 3x3 convs
here are written so that the thin operand (the side with few channels) is
built transposed, [channels, pixels], in the forward pass; autodiff then gives
kernel gradients that are ordinary [M, K] @ [K, N] products, and no wide
activation is ever transposed. Plain autodiff (no custom rules) keeps forward
mode, Hessians and every other transformation working.

A 3x3 conv that reads few channels (the coupling net's first) gathers its
nine shifted inputs (patches); one that writes few channels (the
zero-initialised last) mixes channels first, into nine partial outputs per
pixel, and sums their shifted copies. Both give the 'SAME'-padded
convolution's sum in another order.

The channels-first forms take and give activations laid out [C, B, H, W]. A
chain of them (the Glow coupling net: thin input, wide hidden layers, thin
output) transposes only its thin ends; inside, every product and every kernel
gradient is a plain one and no wide activation is ever transposed, which
removed the last conv's XLA kernel gradient and the 1x1 conv's input transpose
from the train step (README, Performance).

Parameters are those of `flax.linen.Conv` (kernel [3, 3, in, out], bias [out],
same initialisers), so checkpoints and initial values do not change.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Tap t = 3 i + j reads the input at offset (i - 1, j - 1).
_TAPS = tuple((i, j) for i in range(3) for j in range(3))
# The partial-outputs form pays for nine outputs per pixel; above this many
# output channels XLA's convolution is faster.
_MAX_THIN_OUTPUT = 8


def _shift(x: jax.Array, i: int, j: int, axes=(1, 2)) -> jax.Array:
  """out[h, w] = x[h + i - 1, w + j - 1], zero outside; (h, w) are `axes` of x."""
  pad = [(0, 0)] * x.ndim
  pad[axes[0]] = pad[axes[1]] = (1, 1)
  index = [slice(None)] * x.ndim
  index[axes[0]] = slice(i, i + x.shape[axes[0]])
  index[axes[1]] = slice(j, j + x.shape[axes[1]])
  return jnp.pad(x, pad)[tuple(index)]


def _conv3x3_thin_input(x, kernel):
  """Patches [9 Cin, B H W], rows (tap, c), built from the transposed (thin) input."""
  b, h, w, cin = x.shape
  x_t = jnp.transpose(x, (3, 0, 1, 2))
  patches_t = jnp.concatenate([_shift(x_t, i, j, (2, 3)) for i, j in _TAPS], axis=0)
  # y = patches_t^T @ kernel; its kernel gradient is patches_t @ g, a plain product.
  y = jax.lax.dot_general(patches_t.reshape(9 * cin, b * h * w),
                          kernel.reshape(9 * cin, -1), (((0,), (0,)), ((), ())))
  return y.reshape(b, h, w, -1)


def _conv3x3_thin_output(x, kernel):
  """Partial outputs [9 Cout, B H W] = kernel^T x^T, shifted and summed, then transposed."""
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  # Rows (tap, out channel); as the lhs, the kernel gradient is partial-grad @ x.
  kernel_t = jnp.transpose(kernel.reshape(9, cin, cout), (0, 2, 1)).reshape(9 * cout, cin)
  partial_t = jax.lax.dot_general(kernel_t, x.reshape(b * h * w, cin), (((1,), (1,)), ((), ())))
  partial_t = partial_t.reshape(9, cout, b, h, w)
  y_t = sum(_shift(partial_t[t], i, j, (2, 3)) for t, (i, j) in enumerate(_TAPS))
  return jnp.transpose(y_t, (1, 2, 3, 0))  # cheap: few channels


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 convolution of x [B, H, W, Cin] with kernel [3, 3, Cin, Cout], no bias."""
  cin, cout = kernel.shape[2:]
  if cin <= cout:
    return _conv3x3_thin_input(x, kernel)
  if cout <= _MAX_THIN_OUTPUT:
    return _conv3x3_thin_output(x, kernel)
  # Wider outputs: the nine partial outputs cost more than XLA's kernel-gradient
  # transpose (measured 0.84x on the L=3 RGB model, whose nets write 12-48 channels).
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.custom_jvp
def conv1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., Cin] @ kernel [Cin, Cout], with a kernel gradient that is a plain product.

  Plain autodiff gives the kernel gradient x^T g in a form (contracting the
  long pixel axis of row-major operands) that XLA's CPU backend leaves to a
  slow generic kernel. The tangent below reads x through an explicit,
  materialised transpose, so reverse mode gets x_t @ g; the barrier stops
  XLA from folding the transpose back into the product. Measured 1.05-1.08x
  on the whole train step (1 core, L=2 width 64 and L=3 RGB width 128).
  """
  return x @ kernel


@conv1x1.defjvp
def _conv1x1_jvp(primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
  dy_kernel = jax.lax.dot_general(x_t, dkernel, (((0,), (0,)), ((), ())))
  return x @ kernel, dx @ kernel + dy_kernel.reshape(x.shape[:-1] + kernel.shape[-1:])


def _matmul(a, b):
  """a [M, K] @ b [K, N] as the plain row-major product (no operand transposed)."""
  return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())))


def _transposed(kernel: jax.Array) -> jax.Array:
  """kernel.T as its own small array, so the product that reads it is a plain one.

  Left to itself XLA folds a transpose into the dot that reads it (contracting the
  kernel's first axis), and its CPU backend runs that form as a generic dot instead
  of the library's product: 27% of the L=3 RGB evaluation's op time. Materialised
  (the barrier keeps it), the evaluation ran ~20% faster at the quick and L=3 RGB
  sizes, the train step within noise (docs/performance.md).
  """
  return jax.lax.optimization_barrier(kernel.T)


def conv3x3_channels_first(x_t: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 convolution of x_t [Cin, B, H, W] (channels first), kernel [3, 3, Cin, Cout].

  Returns [Cout, B, H, W]. With activations laid out channels by pixels, every
  product is [M, K] @ [K, pixels] with a small kernel-side M or K, and every
  gradient is again a product whose long pixel axis is the minor axis of both
  operands: no activation is transposed, forward or backward. The thin side
  decides the form: nine shifted copies of the input (patches) when Cin <= Cout,
  else nine partial outputs per pixel, shifted and summed.
  """
  cin, b, h, w = x_t.shape
  cout = kernel.shape[-1]
  if cin <= cout:
    patches = jnp.concatenate([_shift(x_t, i, j, (2, 3)) for i, j in _TAPS], axis=0)
    # [Cout, 9 Cin] @ [9 Cin, B H W]; the kernel's transpose is small.
    y = _matmul(_transposed(kernel.reshape(9 * cin, cout)), patches.reshape(9 * cin, b * h * w))
    return y.reshape(cout, b, h, w)
  kernel_t = jnp.transpose(kernel.reshape(9, cin, cout), (0, 2, 1)).reshape(9 * cout, cin)
  partial = _matmul(kernel_t, x_t.reshape(cin, b * h * w)).reshape(9, cout, b, h, w)
  return sum(_shift(partial[t], i, j, (2, 3)) for t, (i, j) in enumerate(_TAPS))


def conv1x1_channels_first(x_t: jax.Array, kernel: jax.Array) -> jax.Array:
  """x_t [Cin, ...] (channels first) through kernel [Cin, Cout]: [Cout, ...]."""
  y = _matmul(_transposed(kernel), x_t.reshape(x_t.shape[0], -1))
  return y.reshape(kernel.shape[-1:] + x_t.shape[1:])


class MatmulConv(nn.Module):
  """Drop-in for `nn.Conv(features, (k, k), padding='SAME')`, k in {1, 3}.

  channels_first: input and output laid out [C, B, H, W] instead of [B, H, W, C]
  (a chain of these convolutions then transposes nothing but its thin ends).
  """
  features: int
  kernel_size: int = 3
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  channels_first: bool = False

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k not in (1, 3):
      raise ValueError(f'MatmulConv supports 1x1 and 3x3 kernels, got {k}.')
    cin = x.shape[0] if self.channels_first else x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features),
                        jnp.float32).astype(x.dtype)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(x.dtype)
    if self.channels_first:
      y = conv1x1_channels_first(x, kernel[0, 0]) if k == 1 else conv3x3_channels_first(x, kernel)
      return y + bias.reshape((-1,) + (1,) * (x.ndim - 1))
    y = conv1x1(x, kernel[0, 0]) if k == 1 else conv3x3(x, kernel)
    return y + bias
