"""The mixture of discretized logistics: normalisation, hand-computed values, sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.models import logistic

# Jitted once per shape: op-by-op dispatch of these small graphs is slower than compiling.
mix_log_prob = jax.jit(logistic.discretized_mix_logistic_log_prob, static_argnums=(2, 3))
mix_channel_log_probs = jax.jit(logistic.discretized_mix_logistic_channel_log_probs,
                                static_argnums=(2, 3))
mix_sample = jax.jit(logistic.sample_discretized_mix_logistic, static_argnums=(2, 3, 4))


def _grey_params(logits, means, log_scales):
  """Grey layout: [logits K | means K | log scales K]."""
  return jnp.asarray(np.concatenate([logits, means, log_scales]), jnp.float32)


def _rgb_params(logits, means, log_scales, coefficients):
  """RGB layout: logits [K], means [3, K], log scales [3, K], raw coefficients [3, K]."""
  parts = [np.ravel(p) for p in (logits, means, log_scales, coefficients)]
  return jnp.asarray(np.concatenate(parts), jnp.float32)


def _numpy_bin_mass(x, mean, scale, n_bits):
  """Float64 mass of bin x: sigmoid differences with open edge bins."""
  sigmoid = lambda t: 1.0 / (1.0 + np.exp(-t))
  top = 2 ** n_bits - 1
  centre = 2.0 * x / top - 1.0
  upper = 1.0 if x == top else sigmoid((centre + 1.0 / top - mean) / scale)
  lower = 0.0 if x == 0 else sigmoid((centre - 1.0 / top - mean) / scale)
  return upper - lower


def test_num_mix_params_counts_weights_means_scales_and_coefficients():
  assert logistic.num_mix_params(1, 10) == 30
  assert logistic.num_mix_params(3, 10) == 100   # PixelCNN++'s 10 * num_mix for RGB
  assert logistic.num_mix_params(2, 4) == 4 * (1 + 4 + 1)
  with pytest.raises(ValueError, match='num_mix'):
    logistic.num_mix_params(3, 0)


@pytest.mark.parametrize('n_bits', [8, 5, 1])
def test_grey_mixture_sums_to_one_over_all_values(n_bits):
  values = jnp.arange(2 ** n_bits)[:, None]
  # Means inside and far outside [-1, 1]; scales from far below a bin to far above the range.
  for mean, log_scale in itertools.product([-3.0, -1.0, 0.37, 2.5], [-20.0, -7.0, 0.0, 5.0]):
    params = _grey_params([0.3, -1.2], [mean, -0.5 * mean], [log_scale, log_scale + 1.0])
    log_probs = mix_log_prob(
        values, jnp.broadcast_to(params, (len(values), params.size)), n_bits, None)
    assert log_probs.shape == (2 ** n_bits,)
    np.testing.assert_allclose(np.exp(np.float64(log_probs)).sum(), 1.0, atol=1e-5,
                               err_msg=f'mean={mean}, log_scale={log_scale}')


@pytest.mark.parametrize('n_bits', [8, 3])
def test_rgb_channel_conditionals_each_sum_to_one(n_bits):
  rng = np.random.default_rng(0)
  params = _rgb_params(rng.normal(size=2), 1.5 * rng.normal(size=(3, 2)),
                       [[-6.0, 0.5], [-3.0, 2.0], [1.0, -7.0]], 3 * rng.normal(size=(3, 2)))
  top = 2 ** n_bits - 1
  for fixed in ([0, top, 5], [top // 2, 0, top]):
    for channel in range(3):
      pixels = np.tile(fixed, (top + 1, 1))
      pixels[:, channel] = np.arange(top + 1)
      log_probs = mix_channel_log_probs(
          jnp.asarray(pixels), jnp.broadcast_to(params, (top + 1, params.size)), n_bits, -7.0)
      np.testing.assert_allclose(np.exp(np.float64(log_probs[:, channel])).sum(), 1.0, atol=1e-5)


def test_rgb_joint_sums_to_one_over_every_colour():
  n_bits = 3
  rng = np.random.default_rng(1)
  params = _rgb_params(rng.normal(size=3), 2 * rng.normal(size=(3, 3)),
                       rng.uniform(-4, 1, size=(3, 3)), 2 * rng.normal(size=(3, 3)))
  colours = jnp.asarray(list(itertools.product(range(2 ** n_bits), repeat=3)))
  log_probs = mix_log_prob(
      colours, jnp.broadcast_to(params, (len(colours), params.size)), n_bits, -7.0)
  np.testing.assert_allclose(np.exp(np.float64(log_probs)).sum(), 1.0, atol=1e-5)


def test_channel_conditionals_add_up_to_the_pixel_log_prob():
  key_x, key_p = jax.random.split(jax.random.PRNGKey(2))
  x = jax.random.randint(key_x, (4, 5, 3), 0, 256)
  params = 2 * jax.random.normal(key_p, (4, 5, logistic.num_mix_params(3, 4)))
  per_channel = mix_channel_log_probs(x, params, 8, -7.0)
  per_pixel = mix_log_prob(x, params, 8, -7.0)
  assert per_channel.shape == (4, 5, 3) and per_pixel.shape == (4, 5)
  np.testing.assert_allclose(per_channel.sum(-1), per_pixel, rtol=1e-5, atol=1e-5)


def test_grey_mixture_matches_float64_numpy():
  weights_logits = np.array([0.4, -0.9])
  means, log_scales = np.array([-0.2, 0.6]), np.array([-2.5, -1.0])
  weights = np.exp(weights_logits) / np.exp(weights_logits).sum()
  params = _grey_params(weights_logits, means, log_scales)
  values = np.array([0, 1, 90, 128, 200, 254, 255])
  expected = [np.log(sum(weights[k] * _numpy_bin_mass(x, means[k], np.exp(log_scales[k]), 8)
                         for k in range(2))) for x in values]
  got = mix_log_prob(jnp.asarray(values)[:, None], jnp.broadcast_to(params, (len(values), 6)),
                     8, -7.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_rgb_mixture_with_coefficients_matches_float64_numpy():
  rng = np.random.default_rng(3)
  weights_logits = np.array([0.2, -0.4])
  means = rng.uniform(-0.8, 0.8, size=(3, 2))
  log_scales = rng.uniform(-3.0, -1.0, size=(3, 2))
  raw = rng.normal(size=(3, 2))           # pairs (G|R), (B|R), (B|G)
  coeff = np.tanh(raw)
  weights = np.exp(weights_logits) / np.exp(weights_logits).sum()
  params = _rgb_params(weights_logits, means, log_scales, raw)
  pixels = np.array([[0, 128, 255], [37, 200, 5], [255, 255, 0], [100, 101, 102]])
  for n_bits, pix in ((8, pixels), (4, pixels // 16)):
    top = 2 ** n_bits - 1
    expected = []
    for r, g, b in pix:
      cr, cg = 2.0 * r / top - 1.0, 2.0 * g / top - 1.0
      total = 0.0
      for k in range(2):
        m = (means[0, k], means[1, k] + coeff[0, k] * cr,
             means[2, k] + coeff[1, k] * cr + coeff[2, k] * cg)
        s = np.exp(log_scales[:, k])
        total += weights[k] * np.prod(
            [_numpy_bin_mass(v, m[c], s[c], n_bits) for c, v in enumerate((r, g, b))])
      expected.append(np.log(total))
    got = mix_log_prob(
        jnp.asarray(pix), jnp.broadcast_to(params, (len(pix), params.size)), n_bits, -7.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_log_scales_are_floored_unless_asked_not_to():
  params = _grey_params([0.0], [0.01], [-30.0])
  x = jnp.array([[128]])
  floored = mix_log_prob(x, params[None], 8, -7.0)
  same_as_minus_7 = mix_log_prob(x, _grey_params([0.0], [0.01], [-7.0])[None], 8, -7.0)
  unfloored = mix_log_prob(x, params[None], 8, None)
  np.testing.assert_allclose(floored, same_as_minus_7, rtol=1e-6)
  assert unfloored[0] < floored[0] - 100.0  # mean 0.01 sits 1.3 bins from 128's centre


def _empirical_vs_exact(samples, probs):
  """Max deviation of frequencies from probabilities in standard errors."""
  n = len(samples)
  counts = np.bincount(samples, minlength=len(probs)) / n
  stderr = np.sqrt(probs * (1 - probs) / n) + 1.0 / n
  return np.max(np.abs(counts - probs) / stderr)


def test_grey_sampler_frequencies_match_the_probabilities():
  n_bits = 3
  params = _grey_params([0.5, -0.5], [-0.6, 0.55], [-1.5, -2.0])
  probs = np.exp(np.float64(mix_log_prob(
      jnp.arange(8)[:, None], jnp.broadcast_to(params, (8, 6)), n_bits, -7.0)))
  samples = mix_sample(jax.random.PRNGKey(4), jnp.broadcast_to(params, (40000, 6)), 1, n_bits)
  assert samples.shape == (40000, 1) and samples.dtype == jnp.int32
  assert _empirical_vs_exact(np.asarray(samples[:, 0]), probs) < 5.0


def test_rgb_sampler_couples_channels_as_the_likelihood_does():
  n_bits = 2
  rng = np.random.default_rng(5)
  params = _rgb_params([0.3, -0.3], rng.uniform(-0.5, 0.5, size=(3, 2)),
                       rng.uniform(-1.5, -0.5, size=(3, 2)), [[2.0, -1.5], [1.0, 0.5], [-2.0, 1.5]])
  colours = np.array(list(itertools.product(range(4), repeat=3)))
  probs = np.exp(np.float64(mix_log_prob(
      jnp.asarray(colours), jnp.broadcast_to(params, (64, params.size)), n_bits, -7.0)))
  samples = np.asarray(mix_sample(
      jax.random.PRNGKey(6), jnp.broadcast_to(params, (60000, params.size)), 3, n_bits))
  codes = samples[:, 0] * 16 + samples[:, 1] * 4 + samples[:, 2]
  assert _empirical_vs_exact(codes, probs) < 5.0


def test_low_temperature_samples_the_component_mean_bin():
  params = _grey_params([0.0], [2.0 * 100 / 255 - 1.0], [-2.0])
  cold = mix_sample(jax.random.PRNGKey(7), jnp.broadcast_to(params, (500, 3)), 1, 8, 1e-3)
  warm = mix_sample(jax.random.PRNGKey(7), jnp.broadcast_to(params, (500, 3)), 1, 8, 1.0)
  assert np.all(np.asarray(cold) == 100)
  assert np.std(np.asarray(warm)) > 10.0
  with pytest.raises(ValueError, match='temperature'):
    logistic.sample_discretized_mix_logistic(jax.random.PRNGKey(7), params, 1, temperature=0.0)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match='multiple of 10'):
    logistic.discretized_mix_logistic_log_prob(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 12)))
  with pytest.raises(TypeError, match='integer pixels'):
    logistic.discretized_mix_logistic_log_prob(jnp.zeros((2, 1)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match='leading axes'):
    logistic.discretized_mix_logistic_log_prob(jnp.zeros((2, 1), jnp.int32), jnp.zeros((3, 3)))
