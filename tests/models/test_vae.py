"""The VAE's bounds, KL, bits/dim bookkeeping, sampling and training, on tiny models."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glow_ood.likelihood import bits_per_dim
from glow_ood.models.logistic import discretized_logistic_log_prob
from glow_ood import model_kinds
from glow_ood.models.vae import VAE, gaussian_kl_to_standard_normal

IMAGE_SHAPE = (8, 8, 1)
NUM_DIMS = 64
LATENT_DIM = 4


def _model(**overrides):
  fields = dict(image_shape=IMAGE_SHAPE, latent_dim=LATENT_DIM, num_filters=4, num_blocks=2)
  fields.update(overrides)
  return VAE(**fields)


def _integer_images(num, seed=0, n_bits=8):
  """Smooth random blobs with pixel noise: structure a small model can learn."""
  rng = np.random.default_rng(seed)
  grid = np.linspace(-1.0, 1.0, IMAGE_SHAPE[0])
  centres = rng.uniform(-0.6, 0.6, size=(num, 2, 1, 1))
  blob = np.exp(-((grid[None, :, None] - centres[:, 0]) ** 2
                  + (grid[None, None, :] - centres[:, 1]) ** 2) / 0.3)
  top = 2 ** n_bits - 1
  x = np.round(top * blob + rng.normal(0.0, 0.03 * top, blob.shape))
  return np.clip(x, 0, top).astype(np.int32)[..., None]


def _dequantize(x_int, seed, n_bits=8):
  u = np.random.default_rng(seed).uniform(0.0, 1.0, x_int.shape)
  return jnp.asarray((x_int + u) / 2 ** n_bits, jnp.float32)


def _init(model, y, seed=0):
  return model.init({'params': jax.random.key(seed), 'latent': jax.random.key(seed + 1)}, y)


def _set(variables, path, value):
  """Copy of variables with the parameter at path ('decoder', 'layer', 'kernel') set."""
  params = flax.core.unfreeze(variables['params'])
  node = params
  for name in path[:-1]:
    node = node[name]
  node[path[-1]] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), node[path[-1]].shape)
  return {'params': params}


def _bound(model, variables, y, key, num_samples=None, noise=None):
  if num_samples is None:
    return model.apply(variables, y, noise=noise, rngs={'latent': key})
  return model.apply(variables, y, num_samples, noise=noise, rngs={'latent': key},
                     method=VAE.importance_weighted)


def _offset(n_bits=8):
  return NUM_DIMS * n_bits * math.log(2.0)


def test_importance_weighted_bound_grows_with_samples_above_the_elbo():
  model = _model()
  y = _dequantize(_integer_images(32), seed=0)
  variables = _init(model, y)
  # Shift q's means away from where the posterior is, so the gap the extra samples
  # close is large.
  bias = variables['params']['encoder']['posterior']['bias']
  variables = _set(variables, ('encoder', 'posterior', 'bias'),
                   bias.at[:LATENT_DIM].add(1.5))
  iwae = jax.jit(lambda key, k: _bound(model, variables, y, key, k).log_px - _offset(),
                 static_argnums=1)
  elbo = jax.jit(lambda key: _bound(model, variables, y, key, 100).elbo)
  keys = jax.random.split(jax.random.key(7), 4)
  means = {k: float(np.mean([iwae(key, k) for key in keys])) for k in (1, 10, 100)}
  mean_elbo = float(np.mean([elbo(key) for key in keys]))
  # IWAE_1 is an unbiased estimate of the ELBO; the bound then rises with K.
  assert abs(means[1] - mean_elbo) < 0.3 * (means[100] - mean_elbo)
  assert means[10] > means[1] + 0.5
  assert means[100] > means[10] + 0.2
  assert means[100] - mean_elbo > 1.0


def test_one_sample_bound_is_the_single_sample_elbo_for_the_same_z():
  model = _model()
  y = _dequantize(_integer_images(6), seed=1)
  variables = _init(model, y)
  key = jax.random.key(3)
  single = _bound(model, variables, y, key)
  one = _bound(model, variables, y, key, 1)
  # The same rng gives the same z: the same reconstruction term, the same KL.
  np.testing.assert_allclose(one.log_px_given_z, single.log_px_given_z, rtol=1e-5)
  np.testing.assert_allclose(one.kl, single.kl, rtol=1e-6)
  np.testing.assert_allclose(one.elbo, single.elbo, rtol=1e-5)

  # With given noise, IWAE_1 is log p(x|z) + log p(z) - log q(z|x), checked in numpy.
  noise = jax.random.normal(jax.random.key(4), (6, LATENT_DIM))
  single = _bound(model, variables, y, key, noise=noise)
  one = _bound(model, variables, y, key, 1, noise=noise[None])
  mean, log_std = (np.asarray(a, np.float64)
                   for a in model.apply(variables, y, method=VAE.encode))
  z = mean + np.exp(log_std) * np.asarray(noise, np.float64)
  log_prior = np.sum(-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi), -1)
  log_q = np.sum(-0.5 * ((z - mean) / np.exp(log_std)) ** 2 - log_std
                 - 0.5 * math.log(2 * math.pi), -1)
  expected = np.asarray(single.log_px_given_z, np.float64) + log_prior - log_q
  np.testing.assert_allclose(np.asarray(one.log_px) - _offset(), expected, atol=2e-3)
  assert np.all(np.abs(expected - np.asarray(single.elbo)) > 1e-2)  # MC vs analytic KL


def test_bounds_are_exact_when_decoder_ignores_z_and_q_is_the_prior():
  model = _model()
  y = _dequantize(_integer_images(5), seed=2)
  variables = _init(model, y)
  variables = _set(variables, ('decoder', 'latent_projection', 'kernel'), 0.0)
  variables = _set(variables, ('encoder', 'posterior', 'kernel'), 0.0)
  variables = _set(variables, ('encoder', 'posterior', 'bias'), 0.0)
  mean, log_scale = model.apply(variables, jnp.zeros((5, LATENT_DIM)), method=VAE.decode)
  x_int = jnp.asarray(_integer_images(5))
  exact = discretized_logistic_log_prob(x_int, mean, log_scale).sum((1, 2, 3))
  single = _bound(model, variables, y, jax.random.key(0))
  np.testing.assert_allclose(single.kl, 0.0, atol=1e-6)
  np.testing.assert_allclose(single.elbo, exact, rtol=1e-6)
  for k in (1, 7, 30):
    out = _bound(model, variables, y, jax.random.key(k), k)
    np.testing.assert_allclose(np.asarray(out.log_px) - _offset(), exact, rtol=1e-5)
    np.testing.assert_allclose(out.elbo, exact, rtol=1e-6)


def test_kl_is_the_analytic_gaussian_kl():
  mean = np.array([[0.5, -1.0, 0.0]])
  std = np.array([[2.0, 0.5, 1.0]])
  # By hand: 0.5 * (s^2 + m^2 - 1 - ln s^2) per dimension.
  expected = 0.5 * ((4.0 + 0.25 - 1.0 - math.log(4.0)) + (0.25 + 1.0 - 1.0 - math.log(0.25)))
  got = gaussian_kl_to_standard_normal(jnp.asarray(mean), jnp.log(jnp.asarray(std)))
  np.testing.assert_allclose(got, [expected], rtol=1e-6)
  np.testing.assert_allclose(gaussian_kl_to_standard_normal(jnp.zeros((2, 3)), jnp.zeros((2, 3))),
                             0.0, atol=0)

  # The model's kl field is that formula of its encoder's q.
  model = _model(latent_dim=3)
  y = _dequantize(_integer_images(2), seed=3)
  variables = _init(model, y)
  variables = _set(variables, ('encoder', 'posterior', 'kernel'), 0.0)
  variables = _set(variables, ('encoder', 'posterior', 'bias'),
                   np.concatenate([mean[0], np.log(std[0])]))
  out = _bound(model, variables, y, jax.random.key(0))
  np.testing.assert_allclose(out.kl, [expected, expected], rtol=1e-5)


@pytest.mark.parametrize('n_bits', [8, 5])
def test_log_px_gives_bits_per_dim_and_ignores_dequantization_noise(n_bits):
  model = _model(n_bits=n_bits)
  x_int = _integer_images(4, n_bits=n_bits)
  y_a = _dequantize(x_int, seed=10, n_bits=n_bits)
  y_b = _dequantize(x_int, seed=11, n_bits=n_bits)
  assert not np.allclose(y_a, y_b)
  variables = _init(model, y_a)
  for k in (None, 3):
    out_a = _bound(model, variables, y_a, jax.random.key(5), k)
    out_b = _bound(model, variables, y_b, jax.random.key(5), k)
    for field in ('log_px', 'elbo', 'log_px_given_z', 'kl'):
      np.testing.assert_array_equal(getattr(out_a, field), getattr(out_b, field))
  out = _bound(model, variables, y_a, jax.random.key(5))
  np.testing.assert_allclose(np.asarray(out.log_px) - np.asarray(out.elbo), _offset(n_bits),
                             rtol=1e-6)
  np.testing.assert_allclose(bits_per_dim(out.log_px, NUM_DIMS, n_bits),
                             -np.asarray(out.elbo) / (NUM_DIMS * math.log(2.0)), rtol=1e-5)


@pytest.mark.parametrize('decoder_scale', ['per_pixel', 'per_channel'])
def test_samples_are_on_the_bin_grid(decoder_scale):
  model = _model(n_bits=5, decoder_scale=decoder_scale)
  variables = _init(model, _dequantize(_integer_images(2, n_bits=5), seed=0, n_bits=5))
  draw = jax.jit(lambda key: model.apply(variables, key, IMAGE_SHAPE, 6, 0.7,
                                         method=VAE.sample))
  y = np.asarray(draw(jax.random.key(1)))
  assert y.shape == (6,) + IMAGE_SHAPE
  bins = y * 32 - 0.5
  np.testing.assert_allclose(bins, np.round(bins), atol=1e-5)
  assert bins.min() >= 0 and bins.max() <= 31
  assert len(np.unique(bins)) > 3  # not all one value
  with pytest.raises(ValueError, match='built for images'):
    model.apply(variables, jax.random.key(1), (16, 16, 1), 2, method=VAE.sample)


def test_log_scale_is_floored():
  model = _model(min_log_scale=-3.0)
  variables = _init(model, _dequantize(_integer_images(2), seed=0))
  variables = _set(variables, ('decoder', 'pixel_params', 'bias'), -50.0)
  _, log_scale = model.apply(variables, jnp.zeros((2, LATENT_DIM)), method=VAE.decode)
  np.testing.assert_array_equal(np.asarray(log_scale), -3.0)


def test_importance_sampling_memory_does_not_grow_with_samples():
  model = _model()
  y = _dequantize(_integer_images(16), seed=0)
  variables = _init(model, y)

  def temp_bytes(k):
    fn = jax.jit(lambda key: _bound(model, variables, y, key, k).log_px)
    return fn.lower(jax.random.key(0)).compile().memory_analysis().temp_size_in_bytes

  one, many = temp_bytes(1), temp_bytes(200)
  # Only the [K, B, latent] noise and [K, B] weights may grow with K: less than one
  # image's worth of floats per (sample, image), where decoding all samples at once
  # would hold several (the logistic's mean, log-scale and log-probabilities).
  growth_per_decoded_image = (many - one) / (199 * 16)
  assert growth_per_decoded_image < NUM_DIMS * 4, (one, many)


def test_tiny_vae_trains():
  model = _model(latent_dim=8, num_filters=8)
  y = _dequantize(_integer_images(16, seed=4), seed=4)
  variables = _init(model, y)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(variables['params'])
  eval_noise = jax.random.normal(jax.random.key(9), (16, 8))

  def mean_elbo(params, key, noise=None):
    return _bound(model, {'params': params}, y, key, noise=noise).elbo.mean()

  @jax.jit
  def step(params, opt_state, key):
    loss, grads = jax.value_and_grad(lambda p: -mean_elbo(p, key))(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  params = variables['params']
  before = float(mean_elbo(params, jax.random.key(0), eval_noise))
  for key in jax.random.split(jax.random.key(2), 50):
    params, opt_state, _ = step(params, opt_state, key)
  after = float(mean_elbo(params, jax.random.key(0), eval_noise))
  # At least 0.5 bits/dim better.
  assert after - before > 0.5 * NUM_DIMS * math.log(2.0), (before, after)


def test_bad_input_raises_clear_errors():
  model = _model()
  y = _dequantize(_integer_images(2), seed=0)
  variables = _init(model, y)
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    model.apply(variables, y[0], rngs={'latent': jax.random.key(0)})
  with pytest.raises(TypeError, match='float'):
    model.apply(variables, jnp.zeros((2,) + IMAGE_SHAPE, jnp.int32),
                rngs={'latent': jax.random.key(0)})
  with pytest.raises(ValueError, match='built for images'):
    model.apply(variables, jnp.zeros((2, 16, 16, 1)), rngs={'latent': jax.random.key(0)})
  with pytest.raises(ValueError, match='num_samples'):
    _bound(model, variables, y, jax.random.key(0), 0)
  with pytest.raises(ValueError, match='noise'):
    _bound(model, variables, y, jax.random.key(0), 2, noise=jnp.zeros((3, 2, LATENT_DIM)))
  with pytest.raises(ValueError, match='divisible by 2\\*\\*num_blocks'):
    _init(_model(image_shape=(12, 12, 1), num_blocks=3), jnp.zeros((1, 12, 12, 1)))
  with pytest.raises(ValueError, match='decoder_scale'):
    _init(_model(decoder_scale='global'), y)
  # The config's model block builds it, the image shape and n_bits coming from the config.
  built = model_kinds.KINDS['vae'].build(
      {'kind': 'vae', 'latent_dim': 4, 'num_filters': 4, 'num_blocks': 2}, 5, [8, 8, 1])
  assert built.image_shape == IMAGE_SHAPE and built.n_bits == 5
