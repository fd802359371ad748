"""3x3 and 1x1 convolutions written as matrix products.

XLA's CPU backend computes a convolution's gradient several times slower than
its forward (the kernel gradient most of all), while matrix products are fast
both ways. The 1x1 conv is a plain product; a 3x3 conv that reads few channels (the coupling
net's first) gathers its nine shifted input copies (patches) and mixes channels
in one product, the same sum as a 'SAME'-padded convolution in another order.
Wider-input 3x3 convs stay XLA convolutions.

Parameters are those of `flax.linen.Conv` (kernel [3, 3, in, out], bias [out],
same initialisers), so checkpoints and initial values do not change.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _taps(x):
  """The nine 'SAME'-padded 3x3 shifts of x [B, H, W, C], tap (i, j) at offset (i-1, j-1)."""
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 convolution of x [B, H, W, Cin] with kernel [3, 3, Cin, Cout], no bias."""
  cin, cout = kernel.shape[2:]
  if cin <= cout:
    # Thin input: patches [B, H, W, 9 Cin] @ kernel [9 Cin, Cout].
    patches = jnp.concatenate(_taps(x), axis=-1)
    return patches @ kernel.reshape(9 * cin, cout)
  # Thin output: XLA's own convolution. Its partial-sums form as a product needs
  # the [B H W, 9 Cout] gradient transposed for the kernel gradient, which cost
  # a third of the train step in a profile.
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


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
