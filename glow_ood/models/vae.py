"""A convolutional VAE whose decoder gives an exact probability of n-bit images.

Model. Prior p(z) = N(0, I) over `latent_dim` dimensions; encoder q(z|x) a
diagonal Gaussian; decoder p(x|z) a discretized logistic per pixel
(`glow_ood.models.logistic`), so log p(x|z) is the log *probability* of the
integer image x, not a density. Encoder: `num_blocks` stride-2 4x4 convolutions
(widths num_filters * 2**i, leaky ReLU) and a dense layer to the mean and log-std
of q. Decoder: a dense layer from z to the coarsest feature map, `num_blocks`
stride-2 4x4 transposed convolutions (ReLU; computed as sub-pixel convolutions)
back to full size and a 3x3 convolution to the logistic's mean and log-scale.
No batch normalisation: an image's likelihood must not depend on the other
images in its batch.

Bounds, per image, in nats on log P(x):

    ELBO  = E_q[log p(x|z)] - KL(q(z|x) || p(z))    (one z per image; KL analytic)
    IWAE_K = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)

E[IWAE_K] grows with K towards log P(x) (Burda et al. 2016). IWAE_1 is the
single-sample ELBO with a Monte Carlo KL, log p(x|z) + log p(z) - log q(z|x): it
shares log p(x|z) with `elbo` for the same z and equals it in expectation.

Input convention (as Glow's here): y = (x + u) / 2**n_bits in [0, 1) with
u in [0, 1); the model reads x = floor(y * 2**n_bits), so the dequantization
noise changes nothing. `log_px` is reported as the log density on [0, 1)^D of
the piecewise-constant density the discrete model defines, bound + D n log 2,
so `glow_ood.likelihood.bits_per_dim(log_px, D, n_bits)` = -bound / (D log 2)
exactly, as for Glow.

Paper-size configuration. Nalisnick et al. (2019) say their VAE follows Rosca,
Lakshminarayanan & Mohamed (2018), "Distribution Matching in Variational
Inference", arXiv:1802.06847, and estimate log p(x) by importance sampling. The
exact layers, latent size and number of importance samples could not be
confirmed from the sources at hand. As recalled (unconfirmed), Rosca et al. use
DCGAN-style convolutional encoders and decoders on CIFAR-10 and CelebA with a
latent of about 100 dimensions and Adam. The nearest documented choice here,
a guess to check against the paper's appendix:

    CIFAR-10 (32x32x3):      latent_dim=100, num_filters=64, num_blocks=3
                             (widths 64-128-256, 4x4 map at the bottleneck)
    FashionMNIST (32x32x1):  latent_dim=64 (guess), num_filters=64, num_blocks=3
    both: Adam 1e-4..3e-4, batch 64, per-pixel decoder scale, evaluation with
          importance_weighted(num_samples=100..1000).

A quick size for 2 CPU cores: latent_dim=32, num_filters=16, num_blocks=3
(243k parameters). Measured on a shared 2-core machine (load ~8), 32x32x1, batch
64, jit(value_and_grad) + Adam: ~130 ms per step (~500 img/s); 3.5 minutes of
Adam 1e-3 on FashionMNIST gave 2.79 bits/dim on its test images and 1.01 on
MNIST digits (IWAE, K=10). num_filters=32: ~470 ms per step; 64 (latent 64):
~1.2 s. Importance sampling costs about K decoder passes: K=100 ran at ~22
img/s for the quick size.
"""

import math
from typing import Literal, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood import literal_fields
from glow_ood.models import discrete_images
from glow_ood.models.logistic import (discretized_logistic_log_prob, pixel_centres,
                                      sample_discretized_logistic)

DECODER_SCALES = ('per_pixel', 'per_channel')
_LOG_2PI = math.log(2.0 * math.pi)


@flax.struct.dataclass
class VAEOutput:
  """Per-example bounds of one pass, every field [B], nats.

  For `VAE.__call__` (one z per image) and `VAE.importance_weighted` (K per image):
    log_px:          the bound used as the model's log-likelihood, as a log density
                     on [0, 1)^D: (ELBO resp. IWAE_K) + D * n_bits * log 2.
    elbo:            log_px_given_z - kl, a bound on log P(x) (no D n log 2 term);
                     for K samples, the mean over them of the single-sample ELBO.
    log_px_given_z:  log p(x | z), the reconstruction term; mean over the K samples.
    kl:              KL(q(z|x) || N(0, I)), analytic (the same for every sample).
  """
  log_px: jax.Array
  elbo: jax.Array
  log_px_given_z: jax.Array
  kl: jax.Array

  def terms(self) -> dict[str, jax.Array]:
    """Per-example terms by name (glow_ood.model_kinds' protocol)."""
    return {'log_px': self.log_px, 'elbo': self.elbo, 'log_px_given_z': self.log_px_given_z,
            'kl': self.kl}


def gaussian_kl_to_standard_normal(mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_std)^2) || N(0, I)) in nats, summed over the last axis."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(2.0 * log_std) - 1.0 - 2.0 * log_std,
                       axis=-1)


class Encoder(nn.Module):
  """[B, H, W, C] pixels on [-1, 1] -> mean and log-std of q(z|x), each [B, latent_dim]."""
  latent_dim: int
  num_filters: int
  num_blocks: int

  @nn.compact
  def __call__(self, x):
    h = x
    for i in range(self.num_blocks):
      h = nn.Conv(self.num_filters * 2 ** i, (4, 4), strides=(2, 2), padding='SAME',
                  name=f'down{i}')(h)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape(h.shape[0], -1)
    params = nn.Dense(2 * self.latent_dim, name='posterior')(h)
    mean, log_std = jnp.split(params, 2, axis=-1)
    return mean, log_std


class Decoder(nn.Module):
  """[B, latent_dim] -> mean and log-scale of the pixels' discretized logistics."""
  image_shape: tuple[int, int, int]
  num_filters: int
  num_blocks: int
  decoder_scale: str
  min_log_scale: float

  @nn.compact
  def __call__(self, z):
    height, width, channels = self.image_shape
    factor = 2 ** self.num_blocks
    top_width = self.num_filters * 2 ** (self.num_blocks - 1)
    # The only layer that reads z: zeroing its kernel makes p(x|z) independent of z.
    h = nn.Dense(height // factor * width // factor * top_width, name='latent_projection')(z)
    h = nn.relu(h.reshape(z.shape[0], height // factor, width // factor, top_width))
    for i in reversed(range(self.num_blocks)):
      width = self.num_filters * 2 ** max(i - 1, 0)
      # A stride-2 4x4 transposed convolution as a sub-pixel one: each of the 2x2
      # output phases reads a 2x2 input window inside a 3x3 one, so a 3x3 conv to
      # 4x the channels then depth-to-space can express every such layer, and XLA's
      # CPU backend takes its gradient several times faster than ConvTranspose's.
      h = _depth_to_space(nn.Conv(4 * width, (3, 3), padding='SAME', name=f'up{i}')(h))
      h = nn.relu(h)
    if self.decoder_scale == 'per_pixel':
      out = nn.Conv(2 * channels, (3, 3), padding='SAME', name='pixel_params')(h)
      mean, log_scale = jnp.split(out, 2, axis=-1)
    else:
      mean = nn.Conv(channels, (3, 3), padding='SAME', name='pixel_params')(h)
      log_scale = jnp.broadcast_to(
          self.param('log_scale', nn.initializers.zeros, (channels,)), mean.shape)
    # A floor on the scale: a collapsing one would give a pixel's bin all the mass
    # and make the loss (and its gradients) blow up on the next image.
    return mean, jnp.maximum(log_scale, self.min_log_scale)


class VAE(nn.Module):
  """Convolutional VAE with a discretized-logistic decoder over n-bit pixels.

  Attributes:
    image_shape: (height, width, channels) of the images; the decoder builds
      images of this shape, so inputs and `sample` must use it. Height and width
      must be divisible by 2**num_blocks.
    latent_dim: dimensions of z.
    num_filters: channels of the first encoder convolution (and the last decoder
      one); each further block doubles them.
    num_blocks: stride-2 convolutions in the encoder (and transposed ones in the
      decoder); the bottleneck map is (height, width) / 2**num_blocks.
    n_bits: bits per pixel of the modelled integer images (1..8).
    decoder_scale: 'per_pixel' (the decoder outputs a log-scale for every pixel,
      depending on z) or 'per_channel' (one learned log-scale per channel).
    min_log_scale: floor on the logistic's log-scale (on the [-1, 1] pixel scale).
    num_importance_samples: K of the importance-weighted bound that `evaluate`
      reports as the model's log-likelihood.
  """
  image_shape: tuple[int, int, int]
  latent_dim: int = 64
  num_filters: int = 64
  num_blocks: int = 3
  n_bits: int = 8
  decoder_scale: Literal[DECODER_SCALES] = 'per_pixel'
  min_log_scale: float = -7.0
  num_importance_samples: int = 100

  def setup(self):
    self._check_fields()
    self.encoder = Encoder(self.latent_dim, self.num_filters, self.num_blocks)
    self.decoder = Decoder(tuple(self.image_shape), self.num_filters, self.num_blocks,
                           self.decoder_scale, self.min_log_scale)

  def _check_fields(self):
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f'VAE.image_shape must be (height, width, channels), got '
                       f'{self.image_shape!r}.')
    for name in ('latent_dim', 'num_filters', 'num_blocks'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'VAE.{name} must be a positive integer, got {value!r}.')
    discrete_images.check_n_bits(self.n_bits, 'VAE')
    literal_fields.check(self)  # decoder_scale
    height, width, _ = self.image_shape
    factor = 2 ** self.num_blocks
    if height % factor or width % factor:
      raise ValueError(f'Image height and width must be divisible by 2**num_blocks = '
                       f'{factor}, got image_shape {tuple(self.image_shape)}; lower '
                       'num_blocks or pad the images.')

  @property
  def num_dims(self) -> int:
    """D = height * width * channels."""
    return math.prod(self.image_shape)

  def _discretization_offset(self) -> float:
    return discrete_images.density_offset(self.num_dims, self.n_bits)

  def _integer_pixels(self, y: jax.Array) -> jax.Array:
    _check_image(y, self.image_shape)
    return discrete_images.integer_pixels(y, self.n_bits)

  def encode(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Dequantized images y [B, H, W, C] -> mean and log-std of q(z|x), each [B, latent_dim]."""
    return self.encoder(pixel_centres(self._integer_pixels(y), self.n_bits))

  def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z [B, latent_dim] -> the pixels' logistic mean and log-scale, each [B, H, W, C]."""
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f'decode expects z of shape [batch, {self.latent_dim}], got {z.shape}.')
    return self.decoder(z)

  def _log_px_given_z(self, x_int: jax.Array, z: jax.Array) -> jax.Array:
    mean, log_scale = self.decoder(z)
    return discretized_logistic_log_prob(x_int, mean, log_scale, self.n_bits).sum((1, 2, 3))

  def _standard_normal(self, num_samples: int, batch: int) -> jax.Array:
    # One helper for both bounds, so the same rng gives __call__'s z as sample 0.
    return jax.random.normal(self.make_rng('latent'), (num_samples, batch, self.latent_dim))

  def _check_noise(self, noise, expected_shape):
    if noise.shape != expected_shape:
      raise ValueError(f'noise must be standard normal draws of shape {expected_shape} '
                       f'(samples, batch, latent_dim), got {noise.shape}.')

  def evaluate(self, y: jax.Array) -> VAEOutput:
    """The importance-weighted bound with num_importance_samples samples per image."""
    return self.importance_weighted(y, self.num_importance_samples)

  def __call__(self, y: jax.Array, train: bool = False,
               noise: jax.Array | None = None) -> VAEOutput:
    """Single-sample ELBO (the training objective) of dequantized images y [B, H, W, C].

    Args:
      y: dequantized images in [0, 1).
      train: unused (no dropout or batch statistics); part of the model protocol.
      noise: optional [B, latent_dim] standard normal draws giving z = mean + std *
        noise; drawn from the 'latent' rng stream when omitted.

    Returns:
      VAEOutput with log_px = ELBO + D n log 2.
    """
    x_int = self._integer_pixels(y)
    mean, log_std = self.encoder(pixel_centres(x_int, self.n_bits))
    if noise is None:
      noise = self._standard_normal(1, y.shape[0])[0]
    self._check_noise(noise, mean.shape)
    log_px_given_z = self._log_px_given_z(x_int, mean + jnp.exp(log_std) * noise)
    kl = gaussian_kl_to_standard_normal(mean, log_std)
    elbo = log_px_given_z - kl
    return VAEOutput(log_px=elbo + self._discretization_offset(), elbo=elbo,
                     log_px_given_z=log_px_given_z, kl=kl)

  def importance_weighted(self, y: jax.Array, num_samples: int,
                          noise: jax.Array | None = None) -> VAEOutput:
    """IWAE bound with `num_samples` z per image from q(z|x).

    The samples are decoded one at a time (a scan over K, each step the whole
    batch), so memory stays that of a single-sample pass for any K.

    Args:
      y: dequantized images [B, H, W, C] in [0, 1).
      num_samples: K >= 1.
      noise: optional [K, B, latent_dim] standard normal draws; drawn from the
        'latent' rng stream when omitted.

    Returns:
      VAEOutput with log_px = IWAE_K + D n log 2; elbo, log_px_given_z: means over
      the K samples; kl: the analytic KL.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
      raise ValueError(f'num_samples must be a positive Python int (static under jit: '
                       f'static_argnums), got {num_samples!r}.')
    x_int = self._integer_pixels(y)
    mean, log_std = self.encoder(pixel_centres(x_int, self.n_bits))
    if noise is None:
      noise = self._standard_normal(num_samples, y.shape[0])
    self._check_noise(noise, (num_samples,) + mean.shape)

    def one_sample(decoder, carry, eps):
      x_int, mean, log_std = carry
      z = mean + jnp.exp(log_std) * eps
      out_mean, out_log_scale = decoder(z)
      log_px_given_z = discretized_logistic_log_prob(
          x_int, out_mean, out_log_scale, self.n_bits).sum((1, 2, 3))
      # log p(z) - log q(z|x); the 0.5 log(2 pi) terms cancel, and q's quadratic
      # term is exactly eps^2 / 2.
      log_prior_ratio = jnp.sum(-0.5 * jnp.square(z) + 0.5 * jnp.square(eps) + log_std, -1)
      return carry, (log_px_given_z, log_prior_ratio)

    scan = nn.scan(one_sample, variable_broadcast='params', split_rngs={'params': False})
    _, (log_px_given_z, log_prior_ratio) = scan(self.decoder, (x_int, mean, log_std), noise)
    log_weights = log_px_given_z + log_prior_ratio                     # [K, B]
    iwae = jax.nn.logsumexp(log_weights, axis=0) - math.log(num_samples)
    kl = gaussian_kl_to_standard_normal(mean, log_std)
    mean_log_px_given_z = log_px_given_z.mean(0)
    return VAEOutput(log_px=iwae + self._discretization_offset(),
                     elbo=mean_log_px_given_z - kl, log_px_given_z=mean_log_px_given_z, kl=kl)

  def sample(self, key: jax.Array, image_shape: Sequence[int], num: int,
             temperature: float = 1.0) -> jax.Array:
    """Draws `num` images y = (x + 0.5) / 2**n_bits, z ~ N(0, temperature^2 I).

    image_shape must equal the model's (it is taken for the same call signature
    as Glow's sample).
    """
    if tuple(image_shape) != tuple(self.image_shape):
      raise ValueError(f'This VAE was built for images {tuple(self.image_shape)}; '
                       f'sample got image_shape {tuple(image_shape)}.')
    if isinstance(temperature, (int, float)) and temperature < 0:
      raise ValueError(f'temperature must be >= 0, got {temperature!r}.')
    latent_key, pixel_key = jax.random.split(key)
    z = temperature * jax.random.normal(latent_key, (num, self.latent_dim))
    mean, log_scale = self.decoder(z)
    x_int = sample_discretized_logistic(pixel_key, mean, log_scale, self.n_bits)
    return discrete_images.midpoints(x_int, self.n_bits)


def _depth_to_space(h: jax.Array) -> jax.Array:
  """[B, H, W, 4C] -> [B, 2H, 2W, C]: channel block (a, b) fills output pixel (2i+a, 2j+b)."""
  batch, height, width, channels = h.shape
  h = h.reshape(batch, height, width, 2, 2, channels // 4)
  return h.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)


def _check_image(y, image_shape):
  discrete_images.check_dequantized(y, 'VAE')
  if tuple(y.shape[1:]) != tuple(image_shape):
    raise ValueError(f'This VAE was built for images {tuple(image_shape)} (height, width, '
                     f'channels), got a batch of shape {y.shape}; set the model\'s '
                     'image_shape to the data\'s.')
