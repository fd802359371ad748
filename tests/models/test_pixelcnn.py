"""PixelCNN++: causality, exact likelihood bookkeeping, sampling, training."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glow_ood import likelihood
from glow_ood.models import logistic
from glow_ood.models.pixelcnn import PixelCNNPP, autoregressive_sample

TINY = dict(num_resnets=1, num_filters=8, num_logistic_mix=2)


def _init(model, shape, seed=0):
  """Random variables of the model's structure, without compiling its initialisers.

  Kernels ~ N(0, 1 / fan_in) and small random biases: like the module's own
  initialisation in scale, which is all these structural tests need (compiling
  the real initialisers costs several seconds per model).
  """
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), jnp.full(shape, 0.5))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = math.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 100.0
    return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in), leaf.dtype)
  return jax.tree_util.tree_map(draw, shapes)


def _raster(i, j, width):
  return i * width + j


@pytest.mark.parametrize('channels', [1, 3])
def test_parameters_of_a_pixel_depend_only_on_earlier_pixels(channels):
  size = 8
  model = PixelCNNPP(**TINY)
  variables = _init(model, (1, size, size, channels))
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, size, size, channels), minval=-1, maxval=1)
  params_fn = lambda x: model.apply(variables, x, method=PixelCNNPP.distribution_params)[0]
  # [H, W, P, H, W, C]: d params at (i, j) / d input at (k, l).
  jacobian = np.asarray(jax.jit(jax.jacrev(params_fn))(x))[..., 0, :, :, :]
  influence = np.abs(jacobian).sum(axis=(2, 5))  # [H, W, H, W]
  for i, j in itertools.product(range(size), repeat=2):
    later = np.array([[_raster(k, l, size) >= _raster(i, j, size) for l in range(size)]
                      for k in range(size)])
    assert np.all(influence[i, j][later] == 0.0), f'pixel ({i}, {j}) sees itself or later pixels'
    # No blind spot: left, above, and above-right neighbours all feed in.
    for k, l in ((i, j - 1), (i - 1, j), (i - 1, j + 1)):
      if 0 <= k and 0 <= l < size:
        assert influence[i, j, k, l] > 0.0, f'pixel ({i}, {j}) ignores ({k}, {l})'
  assert np.all(influence[0, 0] == 0.0)


@pytest.mark.parametrize('channels', [1, 3])
def test_each_channel_log_prob_depends_only_on_what_precedes_it(channels):
  # End to end through the integer pixels: change one (pixel, channel) entry at
  # a time and see which conditional log-probabilities move.
  size, n_bits = 4, 8
  model = PixelCNNPP(**TINY, n_bits=n_bits)
  variables = _init(model, (1, size, size, channels))
  rng = np.random.default_rng(2)
  x = rng.integers(0, 2 ** n_bits, size=(size, size, channels))
  entries = list(itertools.product(range(size), range(size), range(channels)))
  batch = np.repeat(x[None], len(entries) + 1, axis=0)
  for n, (i, j, c) in enumerate(entries):
    batch[n + 1, i, j, c] = (x[i, j, c] + 97) % 2 ** n_bits
  y = (jnp.asarray(batch, jnp.float32) + 0.5) / 2 ** n_bits
  log_probs = np.asarray(jax.jit(
      lambda y: model.apply(variables, y, method=PixelCNNPP.channel_log_probs))(y))
  order = {entry: n for n, entry in enumerate(entries)}  # raster, then channel
  for n, changed in enumerate(entries):
    moved = np.abs(log_probs[n + 1] - log_probs[0]) > 1e-5
    for entry in entries:
      if order[entry] < order[changed]:
        assert not moved[entry], f'{entry} depends on the later entry {changed}'
    assert moved[changed]
    following = [e for e in entries if order[e] > order[changed]]
    if following:
      assert any(moved[e] for e in following), f'nothing depends on {changed}'


def test_log_px_gives_exact_bits_per_dim_and_ignores_dequantization_noise():
  n_bits, shape = 5, (3, 8, 8, 3)
  model = PixelCNNPP(**TINY, n_bits=n_bits)
  variables = _init(model, shape)
  x_int = jax.random.randint(jax.random.PRNGKey(3), shape, 0, 2 ** n_bits)
  apply = jax.jit(lambda y: model.apply(variables, y))
  outputs = [apply(likelihood.dequantize(key, x_int, n_bits))
             for key in jax.random.split(jax.random.PRNGKey(4), 3)]
  outputs.append(apply(likelihood.dequantize(None, x_int, n_bits, 'midpoint')))
  for out in outputs[1:]:
    np.testing.assert_array_equal(out.log_px, outputs[0].log_px)
  params = jax.jit(lambda x: model.apply(variables, x, method=PixelCNNPP.distribution_params))(
      logistic.pixel_centres(x_int, n_bits))
  log2_prob = logistic.discretized_mix_logistic_log_prob(x_int, params, n_bits).sum(
      axis=(1, 2)) / math.log(2.0)
  num_dims = 8 * 8 * 3
  np.testing.assert_allclose(likelihood.bits_per_dim(outputs[0].log_px, num_dims, n_bits),
                             -log2_prob / num_dims, rtol=1e-5)


def test_probabilities_of_all_binary_images_sum_to_one():
  # One-bit 4x4 images: every value of the first 12 pixels (2**12 images), the
  # last row fixed. Their conditionals multiply to one in total only if the
  # network is causal and every conditional is normalised.
  model = PixelCNNPP(**TINY, n_bits=1)
  variables = _init(model, (1, 4, 4, 1))
  # Sharper outputs than at initialisation, so a uniform model could not pass.
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: 30.0 * v if 'mixture_params' in jax.tree_util.keystr(path) else v,
      variables)
  codes = np.arange(2 ** 12)
  bits = np.concatenate([(codes[:, None] >> np.arange(12)) & 1,
                         np.tile([1, 0, 0, 1], (len(codes), 1))], axis=1)
  y = (jnp.asarray(bits.reshape(-1, 4, 4, 1), jnp.float32) + 0.5) / 2
  log_probs = jax.jit(
      lambda y: model.apply(variables, y, method=PixelCNNPP.channel_log_probs))(y)
  log_prob = np.float64(log_probs).reshape(len(codes), 16)[:, :12].sum(axis=1)
  np.testing.assert_allclose(np.exp(log_prob).sum(), 1.0, atol=1e-5)
  assert np.std(log_prob) > 1.0  # far from uniform


def test_sample_is_jittable_and_on_the_bin_grid():
  n_bits = 4
  model = PixelCNNPP(**TINY, n_bits=n_bits)
  variables = _init(model, (1, 8, 8, 3))
  draw = jax.jit(lambda key: model.apply(variables, key, (8, 8, 3), 2, 0.8,
                                         method=PixelCNNPP.sample))
  y = np.asarray(draw(jax.random.PRNGKey(5)))
  assert y.shape == (2, 8, 8, 3)
  x = y * 2 ** n_bits - 0.5
  np.testing.assert_array_equal(x, np.round(x))
  assert x.min() >= 0 and x.max() <= 2 ** n_bits - 1
  assert len(np.unique(x)) > 4


def _rule_params_fn(channels, n_bits):
  """Mixture parameters that put each pixel (almost surely) on a value fixed by the previous one.

  Red follows (5 * previous red + 3) mod 2**n; green and blue targets depend on
  the previous pixel too, but reach their means only through the coupling
  coefficients applied to the pixel's own red (and green).
  """
  top = 2 ** n_bits - 1
  centre = lambda v: 2.0 * v / top - 1.0
  coupling = np.arctanh(np.array([0.5, 0.5, -0.25]))  # (G|R), (B|R), (B|G)

  def params_fn(x_centred):
    batch, height, width, _ = x_centred.shape
    x_int = jnp.round((x_centred + 1.0) * top / 2.0).astype(jnp.int32).reshape(batch, -1, channels)
    previous = jnp.concatenate([jnp.zeros_like(x_int[:, :1]), x_int[:, :-1]], axis=1)
    red = (5 * previous[..., 0] + 3) % (top + 1)
    means = [centre(red)]
    if channels == 3:
      green = (red + previous[..., 1] + 7) % (top + 1)
      blue = (3 * green + 11) % (top + 1)
      means.append(centre(green) - 0.5 * centre(red))
      means.append(centre(blue) - 0.5 * centre(red) + 0.25 * centre(green))
    means = jnp.stack(means, axis=-1)                          # [B, HW, C]
    ones = jnp.ones_like(means)
    # Component 0 is the rule; component 1 (weight e^-30) would put everything at 0.
    logits = jnp.stack([jnp.zeros_like(red), -30.0 * jnp.ones_like(red)], axis=-1)
    comp_means = jnp.stack([means, -ones], axis=-1)            # [B, HW, C, 2]
    comp_scales = jnp.full_like(comp_means, -7.0)
    parts = [logits, comp_means.reshape(batch, height * width, -1),
             comp_scales.reshape(batch, height * width, -1)]
    if channels == 3:
      coeffs = jnp.broadcast_to(jnp.asarray(coupling, jnp.float32)[:, None],
                                (batch, height * width, 3, 2))
      parts.append(coeffs.reshape(batch, height * width, -1))
    return jnp.concatenate(parts, axis=-1).reshape(batch, height, width, -1)
  return params_fn


@pytest.mark.parametrize('channels', [1, 3])
def test_sampling_loop_follows_a_rule_on_the_previous_pixel(channels):
  n_bits, height, width = 8, 3, 5
  draw = jax.jit(lambda key: autoregressive_sample(
      _rule_params_fn(channels, n_bits), key, (height, width, channels), 2, n_bits,
      temperature=0.05))
  x = np.asarray(draw(jax.random.PRNGKey(6))) * 2 ** n_bits - 0.5
  expected = np.zeros((height * width, channels))
  previous = np.zeros(channels)
  for p in range(height * width):
    red = (5 * previous[0] + 3) % 256
    pixel = [red]
    if channels == 3:
      green = (red + previous[1] + 7) % 256
      pixel += [green, (3 * green + 11) % 256]
    expected[p] = previous = np.array(pixel)
  for image in x:
    np.testing.assert_array_equal(image.reshape(-1, channels), expected)


def test_a_tiny_model_learns_a_fixed_batch():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits().images[:8]                         # 8x8, values 0..16
  x_int = jnp.asarray(np.round(digits * 255 / 16), jnp.int32)[..., None]
  y = likelihood.dequantize(None, x_int, 8, 'midpoint')
  model = PixelCNNPP(**TINY)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), y)['params']  # the real initialisation
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    log_px = model.apply({'params': params}, y).log_px
    return jnp.mean(likelihood.bits_per_dim(log_px, 64, 8))

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(30):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 1.0, losses


def test_dropout_is_active_only_in_training():
  model = PixelCNNPP(**TINY, dropout_rate=0.5)
  y = jax.random.uniform(jax.random.PRNGKey(7), (2, 4, 4, 1))
  variables = _init(model, y.shape)
  evaluate = jax.jit(lambda: model.apply(variables, y).log_px)
  train = jax.jit(lambda seed: model.apply(variables, y, train=True,
                                           rngs={'dropout': jax.random.PRNGKey(seed)}).log_px)
  np.testing.assert_array_equal(evaluate(), evaluate())
  assert not np.allclose(train(0), train(1))
  assert not np.allclose(train(0), evaluate())


def test_bad_inputs_and_fields_are_named():
  model = PixelCNNPP(**TINY)
  variables = _init(model, (1, 4, 4, 1))
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    model.apply(variables, jnp.zeros((4, 4, 1)))
  with pytest.raises(TypeError, match='float y'):
    model.apply(variables, jnp.zeros((1, 4, 4, 1), jnp.int32))
  with pytest.raises(ValueError, match='divisible by 4'):
    model.apply(variables, jnp.zeros((1, 6, 4, 1)))
  with pytest.raises(ValueError, match='num_filters'):
    PixelCNNPP(num_filters=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
  with pytest.raises(ValueError, match='dropout_rate'):
    PixelCNNPP(**TINY, dropout_rate=1.0).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
  with pytest.raises(ValueError, match='image_shape'):
    model.apply(variables, jax.random.PRNGKey(0), (4, 4), 1, method=PixelCNNPP.sample)
