"""PixelCNN++ (Salimans et al. 2017, ICLR): an autoregressive model of n-bit images.

The network reads an image and returns, at every pixel, the parameters of a
mixture of discretized logistics (glow_ood.models.logistic) over that pixel's
values. Every convolution is shifted so that the parameters at pixel (i, j)
depend only on pixels before (i, j) in raster order; the channels of one pixel
are coupled inside the mixture. The product over pixels is then an exact
probability P(x) of the integer image, not a bound.

Two streams run side by side: `u` sees the rows strictly above a pixel
(down-shifted 2x3 convolutions), `ul` sees those rows and the pixels to the left
on the pixel's own row (down-right-shifted 2x2 convolutions). The up pass runs
3 stages of `num_resnets` gated residual blocks, halving the resolution twice
between them, and keeps every block's output; the down pass climbs back,
feeding each of its blocks one of those activations (in reverse order) through
the blocks' auxiliary input.

Convolutions here are plain (no weight normalisation and no data-dependent
initialisation, both of which the paper used); the gate convolution of each
residual block starts small instead, so that the deep residual stack starts
near the identity.

Sizes: the paper's CIFAR-10 model has num_resnets=5, num_filters=160,
num_logistic_mix=10 and dropout_rate=0.5 (2.92 bits/dim on CIFAR-10). The
module's cost grows with num_filters**2 and linearly with num_resnets; sampling
runs the whole network once per pixel (H * W times).

Usage:

  model = PixelCNNPP(num_resnets=1, num_filters=32, num_logistic_mix=5)
  variables = model.init(key, y)                        # y: [B, H, W, C] in [0, 1)
  log_px = model.apply(variables, y).log_px             # [B]
  images = model.apply(variables, key, (H, W, C), 16, method=PixelCNNPP.sample)
"""

import math
from collections.abc import Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood.models import discrete_images
from glow_ood.models.logistic import (discretized_mix_logistic_channel_log_probs,
                                      num_mix_params, pixel_centres,
                                      sample_discretized_mix_logistic)

# The up pass halves the resolution twice, so H and W must divide by 4.
DOWNSAMPLING_FACTOR = 4


@flax.struct.dataclass
class PixelCNNOutput:
  """Per-example record of one forward pass (B = batch)."""
  # [B] nats: log P(x) + D * n_bits * log 2, the log density on [0, 1)^D of the
  # piecewise-constant density that spreads P(x) uniformly over x's bin.
  log_px: jax.Array

  def terms(self) -> dict[str, jax.Array]:
    """Per-example terms by name (glow_ood.model_kinds' protocol): log_px only."""
    return {'log_px': self.log_px}


def down_shift(x: jax.Array) -> jax.Array:
  """Moves [B, H, W, C] one row down (zeros enter at the top)."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: jax.Array) -> jax.Array:
  """Moves [B, H, W, C] one column right (zeros enter at the left)."""
  return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def concat_elu(x: jax.Array) -> jax.Array:
  """ELU of x and of -x side by side: keeps both signs' information (channels double)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


class DownShiftedConv(nn.Module):
  """Convolution whose output at row r sees input rows r - kh + 1 .. r, centred in width.

  Padding only at the top keeps rows below r out; the symmetric width padding
  keeps the output at column c centred on c.
  """
  features: int
  kernel_size: tuple[int, int] = (2, 3)
  strides: int = 1
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    return nn.Conv(self.features, (kh, kw), strides=self.strides,
                   padding=((kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2)),
                   kernel_init=self.kernel_init)(x)


class DownRightShiftedConv(nn.Module):
  """Convolution whose output at (r, c) sees input rows r - kh + 1 .. r, columns c - kw + 1 .. c."""
  features: int
  kernel_size: tuple[int, int] = (2, 2)
  strides: int = 1
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    return nn.Conv(self.features, (kh, kw), strides=self.strides,
                   padding=((kh - 1, 0), (kw - 1, 0)), kernel_init=self.kernel_init)(x)


class DownShiftedConvTranspose(nn.Module):
  """Stride-2 transposed 2x3 convolution: input row i feeds output rows 2i and 2i + 1 only."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, height, width, _ = x.shape
    kernel_width = 3
    out = nn.ConvTranspose(self.features, (2, kernel_width), strides=(2, 2), padding='VALID')(x)
    # 'VALID' gives 2W + 1 columns; dropping one at each side centres column j on 2j.
    left = (kernel_width - 1) // 2
    return out[:, :2 * height, left:left + 2 * width]


class DownRightShiftedConvTranspose(nn.Module):
  """Stride-2 transposed 2x2 convolution: input (i, j) feeds the 2x2 block at (2i, 2j) only."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, height, width, _ = x.shape
    out = nn.ConvTranspose(self.features, (2, 2), strides=(2, 2), padding='VALID')(x)
    return out[:, :2 * height, :2 * width]


class GatedResnet(nn.Module):
  """x + a * sigmoid(b), [a, b] from two shifted convolutions of concat_elu(x).

  An auxiliary input (the other stream, or a stored up-pass activation) joins
  through a 1x1 convolution after the first convolution.
  """
  shift: str  # 'down' (the u stream) or 'down_right' (the ul stream)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, aux: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    conv = {'down': DownShiftedConv, 'down_right': DownRightShiftedConv}[self.shift]
    filters = x.shape[-1]
    hidden = conv(filters)(concat_elu(x))
    if aux is not None:
      hidden = hidden + nn.Dense(filters)(concat_elu(aux))
    hidden = concat_elu(hidden)
    hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)
    # A small gate start keeps the sum of many residual blocks near the input at first.
    small = nn.initializers.variance_scaling(0.01, 'fan_in', 'truncated_normal')
    a, b = jnp.split(conv(2 * filters, kernel_init=small)(hidden), 2, axis=-1)
    return x + a * nn.sigmoid(b)


class PixelCNNPP(nn.Module):
  """PixelCNN++ over [B, H, W, C] images of n_bits per channel value.

  Attributes:
    num_resnets: gated residual blocks per stage (3 stages each way).
    num_filters: channels of both streams.
    num_logistic_mix: logistic components per pixel.
    dropout_rate: dropout inside each residual block, active when train=True
      (needs the 'dropout' rng).
    n_bits: bits per channel value; pixels take 2**n_bits values.
  """
  num_resnets: int = 5
  num_filters: int = 160
  num_logistic_mix: int = 10
  dropout_rate: float = 0.0
  n_bits: int = 8

  def evaluate(self, y: jax.Array) -> PixelCNNOutput:
    """The exact log-likelihood, dropout off (the same pass as __call__ at train=False)."""
    return self(y, train=False)

  def __call__(self, y: jax.Array, train: bool = False) -> PixelCNNOutput:
    """Exact log-likelihood of the integer images behind dequantized inputs y.

    y = (x + u) / 2**n_bits with u in [0, 1)^D, as Glow receives it; the
    integer image x = floor(y * 2**n_bits) is read back, so u never changes
    the result (up to float32 rounding of x + u itself, which can land on
    x + 1 when u is within ~1e-5 of 1 and x is large).

    Returns:
      log_px [B] = log P(x) + D * n_bits * log 2, D = H * W * C: the log
      density of the piecewise-constant density that P defines on [0, 1)^D.
      So glow_ood.likelihood.bits_per_dim(log_px, D, n_bits) gives exactly
      -log2 P(x) / D, in the same bookkeeping as Glow's log p(y).
    """
    channel_log_probs = self.channel_log_probs(y, train)
    num_dims = math.prod(y.shape[1:])
    log_prob = channel_log_probs.sum(axis=(1, 2, 3))
    return PixelCNNOutput(log_px=log_prob + discrete_images.density_offset(num_dims, self.n_bits))

  def channel_log_probs(self, y: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, C] log P(x_{i,j,c} | everything before it), in nats.

    "Before" is every earlier pixel in raster order and the pixel's own earlier
    channels; the sum over all entries is log P(x) of each image.
    """
    _check_image(y, 'y')
    x_int = discrete_images.integer_pixels(y, self.n_bits)
    params = self.distribution_params(pixel_centres(x_int, self.n_bits), train)
    return discretized_mix_logistic_channel_log_probs(x_int, params, self.n_bits)

  @nn.compact
  def distribution_params(self, x_centred: jax.Array, train: bool = False) -> jax.Array:
    """Mixture parameters of every pixel given the pixels before it.

    Args:
      x_centred: [B, H, W, C] bin centres on [-1, 1] (logistic.pixel_centres).
      train: enables dropout.

    Returns:
      [B, H, W, num_mix_params(C, num_logistic_mix)] in the layout of
      glow_ood.models.logistic; entry (i, j) depends only on pixels strictly
      before (i, j) in raster order.
    """
    self._check_fields()
    _check_image(x_centred, 'x_centred')
    filters, resnets = self.num_filters, self.num_resnets
    channels = x_centred.shape[-1]
    # A channel of ones lets the first convolutions tell zero padding from pixels at 0.
    x = jnp.concatenate([x_centred, jnp.ones_like(x_centred[..., :1])], axis=-1)

    # Up pass. The first layers shift so that u sees rows above, ul also the left.
    u_stack = [down_shift(DownShiftedConv(filters, (2, 3), name='u_in')(x))]
    ul_stack = [down_shift(DownShiftedConv(filters, (1, 3), name='ul_in_above')(x))
                + right_shift(DownRightShiftedConv(filters, (2, 1), name='ul_in_left')(x))]
    for stage in range(3):
      if stage > 0:
        u_stack.append(DownShiftedConv(filters, (2, 3), strides=2,
                                       name=f'up{stage}_u_downsample')(u_stack[-1]))
        ul_stack.append(DownRightShiftedConv(filters, (2, 2), strides=2,
                                             name=f'up{stage}_ul_downsample')(ul_stack[-1]))
      for block in range(resnets):
        u_stack.append(GatedResnet('down', self.dropout_rate, name=f'up{stage}_u{block}')(
            u_stack[-1], train=train))
        ul_stack.append(GatedResnet('down_right', self.dropout_rate, name=f'up{stage}_ul{block}')(
            ul_stack[-1], u_stack[-1], train=train))

    # Down pass: every block consumes one stored up-pass activation, last first.
    u, ul = u_stack.pop(), ul_stack.pop()
    for stage in range(3):
      if stage > 0:
        u = DownShiftedConvTranspose(filters, name=f'down{stage}_u_upsample')(u)
        ul = DownRightShiftedConvTranspose(filters, name=f'down{stage}_ul_upsample')(ul)
      # Stages after an upsampling also consume the downsampling's output.
      for block in range(resnets + (stage > 0)):
        u = GatedResnet('down', self.dropout_rate, name=f'down{stage}_u{block}')(
            u, u_stack.pop(), train=train)
        ul = GatedResnet('down_right', self.dropout_rate, name=f'down{stage}_ul{block}')(
            ul, jnp.concatenate([u, ul_stack.pop()], axis=-1), train=train)
    assert not u_stack and not ul_stack, 'every up-pass activation is consumed once'
    return nn.Dense(num_mix_params(channels, self.num_logistic_mix), name='mixture_params')(
        nn.elu(ul))

  def sample(self, key: jax.Array, image_shape: Sequence[int], num: int,
             temperature: float = 1.0) -> jax.Array:
    """Draws `num` images pixel by pixel in raster order (the whole net per pixel).

    Args:
      key: PRNG key.
      image_shape: (H, W, C), H and W divisible by 4.
      num: number of images.
      temperature: multiplies every logistic scale.

    Returns:
      [num, H, W, C] images y = (x + 0.5) / 2**n_bits in [0, 1).
    """
    return autoregressive_sample(
        lambda x_centred: self.distribution_params(x_centred, train=False),
        key, image_shape, num, self.n_bits, temperature)

  def _check_fields(self):
    for name in ('num_resnets', 'num_filters', 'num_logistic_mix'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'PixelCNNPP.{name} must be an integer >= 1, got {value!r}.')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'PixelCNNPP.dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    discrete_images.check_n_bits(self.n_bits, 'PixelCNNPP')


def autoregressive_sample(params_fn: Callable[[jax.Array], jax.Array], key: jax.Array,
                          image_shape: Sequence[int], num: int, n_bits: int,
                          temperature: float = 1.0) -> jax.Array:
  """Samples images one pixel at a time in raster order under jax.lax.fori_loop.

  Args:
    params_fn: bin centres [num, H, W, C] on [-1, 1] -> mixture parameters
      [num, H, W, P] (layout of glow_ood.models.logistic), where pixel (i, j)'s
      parameters may depend on the pixels before it.
    key: PRNG key.
    image_shape: (H, W, C).
    num: number of images.
    n_bits: bits per channel value.
    temperature: multiplies every logistic scale.

  Returns:
    [num, H, W, C] images y = (x + 0.5) / 2**n_bits.
  """
  if len(image_shape) != 3:
    raise ValueError(f'image_shape must be (height, width, channels), got {image_shape!r}.')
  if not isinstance(num, int) or num < 1:
    raise ValueError(f'num must be an integer >= 1, got {num!r}.')
  height, width, channels = (int(size) for size in image_shape)

  def draw_pixel(index, x_int):
    row, col = index // width, index % width
    params = params_fn(pixel_centres(x_int, n_bits))[:, row, col]
    pixel = sample_discretized_mix_logistic(
        jax.random.fold_in(key, index), params, channels, n_bits, temperature)
    return x_int.at[:, row, col].set(pixel)

  x_int = jnp.zeros((num, height, width, channels), jnp.int32)
  x_int = jax.lax.fori_loop(0, height * width, draw_pixel, x_int)
  return discrete_images.midpoints(x_int, n_bits)


def _check_image(images: jax.Array, name: str):
  discrete_images.check_dequantized(images, 'PixelCNNPP', name)
  if images.shape[1] % DOWNSAMPLING_FACTOR or images.shape[2] % DOWNSAMPLING_FACTOR:
    raise ValueError(
        f'PixelCNNPP halves the resolution twice, so {name} height and width must be '
        f'divisible by {DOWNSAMPLING_FACTOR}, got shape {images.shape}.')
