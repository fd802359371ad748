"""Discretized logistic likelihoods of n-bit pixels (Salimans et al. 2017).

Pixel values x in {0, ..., 2**n - 1} sit at centres c = 2x / (2**n - 1) - 1 on
[-1, 1], each bin of half-width 1 / (2**n - 1). A logistic with mean m and
scale s = exp(log_scale) gives bin x the mass

    P(x) = sigmoid((c + hw - m) / s) - sigmoid((c - hw - m) / s),

with the edge bins left open (x = 0 takes everything below, x = 2**n - 1
everything above), so the probabilities of all 2**n values sum to exactly one
and the likelihood of an image is exact, not a bound.

PixelCNN++ uses a mixture of such logistics per pixel, with the channels of a
pixel coupled linearly in their order (see `discretized_mix_logistic_log_prob`).
"""

import flax
import jax
import jax.numpy as jnp


def pixel_centres(x_int: jax.Array, n_bits: int) -> jax.Array:
  """Integer pixels -> bin centres on [-1, 1]."""
  return 2.0 * x_int.astype(jnp.float32) / (2 ** n_bits - 1) - 1.0


def discretized_logistic_log_prob(x_int: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  n_bits: int = 8) -> jax.Array:
  """Elementwise log P(x) in nats of integer pixels under a discretized logistic.

  x_int: integer pixels in [0, 2**n_bits); mean, log_scale: broadcastable, on the
  [-1, 1] scale.
  """
  top = 2 ** n_bits - 1
  half_width = 1.0 / top
  centred = pixel_centres(x_int, n_bits) - mean
  inv_scale = jnp.exp(-log_scale)
  upper = inv_scale * (centred + half_width)
  lower = inv_scale * (centred - half_width)
  # log sigmoid(upper) for the lowest bin; log(1 - sigmoid(lower)) for the highest.
  log_cdf_upper = jax.nn.log_sigmoid(upper)
  log_survival_lower = -jax.nn.softplus(lower)
  # Interior bins: log(sigmoid(upper) - sigmoid(lower)), stable when both are near 1 or 0:
  # sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)).
  log_interior = (jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower)
                  + jnp.log(-jnp.expm1(lower - upper)))
  return jnp.where(x_int <= 0, log_cdf_upper,
                   jnp.where(x_int >= top, log_survival_lower, log_interior))


def sample_discretized_logistic(key: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                n_bits: int = 8) -> jax.Array:
  """Integer pixels drawn from the discretized logistic (rounded to the nearest bin).

  Rounding a continuous logistic draw to the nearest bin centre, then clipping
  into the edge bins, gives each bin exactly its mass under
  `discretized_logistic_log_prob`.
  """
  # u in [0, 1) untruncated: u = 0 gives -inf, which the clip puts in bin 0, so
  # the tails keep their mass down to float32's resolution of u (~1e-7).
  u = jax.random.uniform(key, jnp.shape(mean))
  value = mean + jnp.exp(log_scale) * (jnp.log(u) - jnp.log1p(-u))
  top = 2 ** n_bits - 1
  return jnp.clip(jnp.round((value + 1.0) * top / 2.0), 0, top).astype(jnp.int32)


# ----------------------------------------------------------------------------
# Mixture of discretized logistics, the PixelCNN++ output distribution.
#
# Layout of `params` (channels last), for C channels and K = num_mix components:
#
#   params[..., :K]                          mixture logits                  [..., K]
#   params[..., K : K + C K]                 means, channel-major            [..., C, K]
#   params[..., K + C K : K + 2 C K]         raw log scales, channel-major   [..., C, K]
#   params[..., K + 2 C K :]                 raw coupling coefficients       [..., C(C-1)/2, K]
#
# so num_mix_params(C, K) = K * (1 + 2C + C(C-1)/2): 3K for grey, 10K for RGB.
# The coefficients come in the order of the pairs (c, j), j < c, row-major:
# (1, 0), (2, 0), (2, 1), ... i.e. (G|R), (B|R), (B|G) for RGB. Within component
# k, channel c has mean
#
#   mean[c, k] + sum_{j < c} tanh(coeff[(c, j), k]) * centre(x_j),
#
# centre(x_j) the bin centre on [-1, 1] of the pixel's own channel j, so the
# channels of one pixel are autoregressive in their order, and the pixel's
# probability is exact: P(x) = sum_k pi_k prod_c P_k(x_c | x_<c).
# ----------------------------------------------------------------------------

# PixelCNN++ floors the log scales at -7: a scale of 1e-3 on [-1, 1] already puts
# almost all of a component's mass in one 8-bit bin, and the floor keeps the
# gradients of over-confident components finite.
DEFAULT_MIN_LOG_SCALE = -7.0


def num_coupling_coefficients(channels: int) -> int:
  """C(C-1)/2: one coefficient per ordered channel pair (c, j), j < c."""
  return channels * (channels - 1) // 2


def num_mix_params(channels: int, num_mix: int) -> int:
  """Output channels a network must produce per pixel: num_mix * (1 + 2C + C(C-1)/2)."""
  if channels < 1 or num_mix < 1:
    raise ValueError(f'channels and num_mix must be >= 1, got channels={channels}, '
                     f'num_mix={num_mix}.')
  return num_mix * (1 + 2 * channels + num_coupling_coefficients(channels))


@flax.struct.dataclass
class MixLogisticParams:
  """Unpacked mixture parameters of each pixel (leading axes [...] as in `params`)."""
  logits: jax.Array        # [..., K] unnormalised log mixture weights
  means: jax.Array         # [..., C, K] before the within-pixel channel coupling
  log_scales: jax.Array    # [..., C, K] floored at min_log_scale
  coefficients: jax.Array  # [..., C(C-1)/2, K] in (-1, 1), after tanh

  def coupled_means(self, x_centres: jax.Array) -> jax.Array:
    """Per-component channel means given the pixel's bin centres x_centres [..., C]."""
    channels = self.means.shape[-2]
    coupled, pair = [], 0
    for c in range(channels):
      mean = self.means[..., c, :]
      for j in range(c):
        mean = mean + self.coefficients[..., pair, :] * x_centres[..., j, None]
        pair += 1
      coupled.append(mean)
    return jnp.stack(coupled, axis=-2)


def split_mix_params(params: jax.Array, channels: int,
                     min_log_scale: float | None = DEFAULT_MIN_LOG_SCALE) -> MixLogisticParams:
  """Unpacks `params` [..., num_mix_params(C, K)] (layout above) into its parts.

  Args:
    params: raw network outputs, channels last.
    channels: C, the image's channels.
    min_log_scale: floor on the log scales (PixelCNN++ uses -7); None for none.

  Returns:
    The unpacked parameters, coefficients squashed by tanh.
  """
  per_component = num_mix_params(channels, 1)
  size = params.shape[-1]
  if size % per_component:
    raise ValueError(
        f'A mixture of discretized logistics over {channels} channels needs a multiple of '
        f'{per_component} parameters per pixel (num_mix_params(channels, num_mix)), '
        f'got params of shape {params.shape}.')
  k = size // per_component
  c = channels
  lead = params.shape[:-1]
  logits = params[..., :k]
  means = params[..., k:k + c * k].reshape(lead + (c, k))
  log_scales = params[..., k + c * k:k + 2 * c * k].reshape(lead + (c, k))
  if min_log_scale is not None:
    log_scales = jnp.maximum(log_scales, min_log_scale)
  coefficients = jnp.tanh(
      params[..., k + 2 * c * k:].reshape(lead + (num_coupling_coefficients(c), k)))
  return MixLogisticParams(logits=logits, means=means, log_scales=log_scales,
                           coefficients=coefficients)


def _check_pixels_and_params(x_int, params):
  if x_int.ndim < 1 or x_int.shape[:-1] != params.shape[:-1]:
    raise ValueError(
        f'x_int [..., C] and params [..., P] must share their leading axes, got x_int '
        f'{x_int.shape} and params {params.shape}.')
  if not jnp.issubdtype(x_int.dtype, jnp.integer):
    raise TypeError(f'x_int must hold integer pixels in [0, 2**n_bits), got dtype '
                    f'{x_int.dtype}; use glow_ood.likelihood.reduce_bits first.')


def discretized_mix_logistic_channel_log_probs(
    x_int: jax.Array, params: jax.Array, n_bits: int = 8,
    min_log_scale: float | None = DEFAULT_MIN_LOG_SCALE) -> jax.Array:
  """log P(x_c | x_<c) in nats of each channel of each pixel under the mixture.

  The mixture weights of channel c are the posterior over components given
  the pixel's earlier channels, so summing over channels gives the pixel's
  log P(x) of `discretized_mix_logistic_log_prob`.

  Args:
    x_int: [..., C] integer pixels in [0, 2**n_bits).
    params: [..., num_mix_params(C, K)] in the layout described above.
    n_bits: bits per channel value.
    min_log_scale: floor on the log scales; None for none.

  Returns:
    [..., C] conditional log-probabilities.
  """
  joint = _joint_log_probs_of_leading_channels(x_int, params, n_bits, min_log_scale)
  previous = jnp.concatenate([jnp.zeros_like(joint[..., :1]), joint[..., :-1]], axis=-1)
  return joint - previous


def discretized_mix_logistic_log_prob(
    x_int: jax.Array, params: jax.Array, n_bits: int = 8,
    min_log_scale: float | None = DEFAULT_MIN_LOG_SCALE) -> jax.Array:
  """log P(x) in nats of each pixel (all its channels) under the mixture.

  Args:
    x_int: [..., C] integer pixels in [0, 2**n_bits), e.g. [B, H, W, C].
    params: [..., num_mix_params(C, K)] in the layout described above.
    n_bits: bits per channel value.
    min_log_scale: floor on the log scales; None for none.

  Returns:
    [...] per-pixel log-probabilities, e.g. [B, H, W]; sum them over pixels for
    an image's exact log P(x).
  """
  return _joint_log_probs_of_leading_channels(x_int, params, n_bits, min_log_scale)[..., -1]


def _joint_log_probs_of_leading_channels(x_int, params, n_bits, min_log_scale):
  """[..., C]: entry c is log P(x_0, ..., x_c) of the pixel's first c + 1 channels."""
  _check_pixels_and_params(x_int, params)
  mix = split_mix_params(params, x_int.shape[-1], min_log_scale)
  means = mix.coupled_means(pixel_centres(x_int, n_bits))
  component_log_probs = discretized_logistic_log_prob(   # [..., C, K]
      x_int[..., None], means, mix.log_scales, n_bits)
  log_weights = jax.nn.log_softmax(mix.logits, axis=-1)[..., None, :]
  return jax.nn.logsumexp(log_weights + jnp.cumsum(component_log_probs, axis=-2), axis=-1)


def sample_discretized_mix_logistic(
    key: jax.Array, params: jax.Array, channels: int, n_bits: int = 8,
    temperature: float = 1.0,
    min_log_scale: float | None = DEFAULT_MIN_LOG_SCALE) -> jax.Array:
  """Draws integer pixels [..., C] from the mixture, independently per pixel.

  A component is picked by Gumbel-max on the logits; its channels are drawn in
  order, each one's mean coupled to the bin centres of the channels already
  drawn, exactly as `discretized_mix_logistic_log_prob` scores them.

  Args:
    key: PRNG key.
    params: [..., num_mix_params(C, K)] in the layout described above.
    channels: C.
    n_bits: bits per channel value.
    temperature: multiplies every logistic scale (the mixture weights are
      unchanged); below 1 sharpens the samples.
    min_log_scale: floor on the log scales, applied before the temperature.

  Returns:
    int32 pixels in [0, 2**n_bits), shape params.shape[:-1] + (C,).
  """
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature!r}.')
  mix = split_mix_params(params, channels, min_log_scale)
  component_key, *channel_keys = jax.random.split(key, channels + 1)
  gumbel = jax.random.gumbel(component_key, mix.logits.shape)
  component = jnp.argmax(mix.logits + gumbel, axis=-1)

  def pick(per_component):  # [..., N, K] -> [..., N], the chosen component's entries
    index = jnp.broadcast_to(component[..., None, None], per_component.shape[:-1] + (1,))
    return jnp.take_along_axis(per_component, index, axis=-1)[..., 0]

  means, log_scales = pick(mix.means), pick(mix.log_scales) + jnp.log(temperature)
  coefficients = pick(mix.coefficients)
  drawn, centres, pair = [], [], 0
  for c in range(channels):
    mean = means[..., c]
    for j in range(c):
      mean = mean + coefficients[..., pair] * centres[j]
      pair += 1
    x_c = sample_discretized_logistic(channel_keys[c], mean, log_scales[..., c], n_bits)
    drawn.append(x_c)
    centres.append(pixel_centres(x_c, n_bits))
  return jnp.stack(drawn, axis=-1)
