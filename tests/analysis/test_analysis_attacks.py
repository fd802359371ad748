"""The PGD engine against closed-form optima, and its contract on a tiny Glow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.configs import common
from glow_ood import evaluate
from glow_ood import train_state as train_state_lib
from glow_ood.analysis import attacks

SHAPE = (3, 4, 4, 1)


def _gaussian_objective(mean, scale):
  """log N(x; mean, scale^2) per image, up to a constant: its integer optimum is known."""
  def objective(x, key):
    del key
    return -jnp.sum((x - mean) ** 2, axis=(1, 2, 3)) / (2 * scale ** 2)
  return objective


def _integer_optimum(x0, mean, epsilon):
  """Per pixel the nearest integer to the mean, clipped to the ball and to [0, 255]."""
  low = np.maximum(x0 - epsilon, 0)
  high = np.minimum(x0 + epsilon, 255)
  return np.clip(np.round(mean), low, high)


@pytest.mark.parametrize('epsilon', [1, 3, 8])
def test_reaches_the_gaussian_optimum_within_the_ball(epsilon):
  rng = np.random.default_rng(0)
  x0 = rng.integers(0, 256, SHAPE).astype(np.uint8)
  x0[0, 0, 0, 0], x0[0, 0, 1, 0] = 0, 255   # pixels on the edges of the valid range
  # Means inside and outside each ball, off the integers by 0.2-0.3 (no rounding ties),
  # some beyond [0, 255] so the pixel-range projection binds.
  offsets = rng.choice([-0.3, -0.2, 0.2, 0.3], SHAPE)
  mean = x0 + rng.integers(-2 * epsilon, 2 * epsilon + 1, SHAPE) + offsets
  mean[0, 0, 0, 0], mean[0, 0, 1, 0] = -10.3, 270.2
  objective = _gaussian_objective(jnp.asarray(mean, jnp.float32), 7.0)
  result = attacks.pgd_attack(objective, x0, epsilon=epsilon, num_steps=40,
                              key=jax.random.PRNGKey(0))
  expected = _integer_optimum(x0.astype(np.float64), mean, epsilon)
  np.testing.assert_array_equal(result.images, expected.astype(np.uint8))
  # The returned objective is the optimum's.
  np.testing.assert_allclose(result.objective_after,
                             np.asarray(objective(jnp.asarray(expected, jnp.float32), None)),
                             rtol=1e-6)
  assert np.all(result.objective_after > result.objective_before)


def test_per_image_epsilon_and_arguments():
  """Epsilon and objective args per image: a linear objective ends on the ball's corner."""
  x0 = np.full(SHAPE, 100, np.uint8)
  direction = np.sign(np.random.default_rng(1).normal(size=SHAPE)).astype(np.float32)

  def objective(x, key, sign):
    del key
    return sign * jnp.sum(x * direction, axis=(1, 2, 3))
  epsilon = np.array([1.0, 2.0, 5.0])
  sign = np.array([1.0, -1.0, 1.0], np.float32)
  result = attacks.pgd_attack(objective, x0, epsilon=epsilon, num_steps=10,
                              key=jax.random.PRNGKey(0), objective_args=(sign,))
  expected = 100 + epsilon[:, None, None, None] * sign[:, None, None, None] * direction
  np.testing.assert_array_equal(result.images, expected.astype(np.uint8))
  # A linear objective keeps its first-order promise exactly: 16 pixels x epsilon.
  np.testing.assert_allclose(result.first_order_gain, 16 * epsilon)
  np.testing.assert_allclose(result.objective_after - result.objective_before, 16 * epsilon)
  np.testing.assert_array_equal(result.edge_share, 0.0)
  assert result.trace.shape == (11, 3) and result.best_trace.shape == (11, 3)
  assert np.all(np.diff(result.best_trace, axis=0) >= 0)


def _tiny_glow(coupling='affine', n_bits=8, size=16, num=6):
  config = common.base_config()
  config.n_bits = n_bits
  config.data.image_size = size
  config.model.num_levels = 2
  config.model.steps_per_level = 1
  config.model.hidden_channels = 8
  config.model.coupling = coupling
  rng = np.random.default_rng(2)
  yy, xx = np.mgrid[:size, :size]
  blobs = np.exp(-((yy - rng.uniform(4, 12, (num, 1, 1))) ** 2
                   + (xx - rng.uniform(4, 12, (num, 1, 1))) ** 2) / 12.0)
  images = np.clip(blobs * 230 + rng.normal(0, 6, blobs.shape), 0, 255).astype(np.uint8)
  images = images[..., None]
  model = train_state_lib.model_from_config(config)
  y = (images.astype(np.float32) + 0.5) / 256
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(y))
  # A few random coupling weights, so the affine couplings depend on the input.
  leaves, tree = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  leaves = [l + 0.02 * jax.random.normal(k, l.shape) if l.ndim == 4 else l
            for l, k in zip(leaves, keys)]
  return config, model, dict(variables, params=jax.tree.unflatten(tree, leaves)), images


@pytest.mark.parametrize('dequantization, n_bits', [('uniform', 8), ('midpoint', 5)])
def test_statistics_equal_the_evaluation_at_integer_pixels(dequantization, n_bits):
  config, model, variables, images = _tiny_glow(n_bits=n_bits)
  key = jax.random.PRNGKey(3)
  stats_fn = attacks.statistics_fn(model, variables, n_bits, dequantization)
  ours = jax.device_get(stats_fn(jnp.asarray(images, jnp.float32), jax.random.fold_in(key, 0)))
  theirs = evaluate.Evaluator(config)(variables, images, batch_size=len(images),
                                     dequantization=dequantization, key=key)
  assert set(ours) == set(attacks.STATISTICS_KEYS) == set(theirs)
  for name in attacks.STATISTICS_KEYS:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-2, err_msg=name)


@pytest.mark.parametrize('coupling', ['affine', 'additive'])
def test_attack_contract_on_a_tiny_glow(coupling):
  """Within epsilon, valid integer pixels, never worse, and the reported objective is a
  fresh evaluation's."""
  config, model, variables, images = _tiny_glow(coupling)
  key = jax.random.PRNGKey(7)
  stats_fn = attacks.statistics_fn(model, variables, config.n_bits, 'uniform')
  objective = attacks.signed_log_density_objective(stats_fn)
  sign = np.array([1.0, -1.0] * (len(images) // 2), np.float32)
  result = attacks.pgd_attack(objective, images, epsilon=2, num_steps=6,
                              key=jax.random.PRNGKey(8), noise_draws=2,
                              select_key=jax.random.fold_in(key, 0), objective_args=(sign,))
  assert result.images.dtype == np.uint8 and result.images.shape == images.shape
  change = result.images.astype(np.int32) - images.astype(np.int32)
  assert np.abs(change).max() <= 2
  assert np.any(change != 0)
  assert np.all(result.objective_after >= result.objective_before)
  assert np.all(result.objective_after[sign > 0] > result.objective_before[sign > 0])
  np.testing.assert_array_equal(result.best_trace[-1], result.objective_after)

  evaluator = evaluate.Evaluator(config)
  fresh = evaluator(variables, result.images, batch_size=len(images), dequantization='uniform',
                    key=key)
  np.testing.assert_allclose(sign * fresh['log_p_discrete'], result.objective_after, rtol=1e-5)
  original = evaluator(variables, images, batch_size=len(images), dequantization='uniform',
                       key=key)
  np.testing.assert_allclose(sign * original['log_p_discrete'], result.objective_before,
                             rtol=1e-5)


def test_evasion_objective_moves_a_score():
  """A score defined here (bits/dim) evaded: OOD images (sign -1) end with lower scores."""
  config, model, variables, images = _tiny_glow()
  stats_fn = attacks.statistics_fn(model, variables, config.n_bits, 'midpoint')
  objective = attacks.evasion_objective(stats_fn, lambda stats: stats['bits_per_dim'])
  result = attacks.pgd_attack(objective, images, epsilon=1, num_steps=4,
                              key=jax.random.PRNGKey(0), objective_args=(-1.0,))
  before = stats_fn(jnp.asarray(images, jnp.float32), None)['bits_per_dim']
  after = stats_fn(jnp.asarray(result.images, jnp.float32), None)['bits_per_dim']
  np.testing.assert_allclose(-np.asarray(after), result.objective_after, rtol=1e-6)
  assert np.all(np.asarray(after) < np.asarray(before))


def test_bad_inputs_raise():
  objective = _gaussian_objective(0.0, 1.0)
  with pytest.raises(ValueError, match='uint8'):
    attacks.pgd_attack(objective, np.zeros(SHAPE, np.float32), epsilon=1, num_steps=1,
                       key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='epsilon'):
    attacks.pgd_attack(objective, np.zeros(SHAPE, np.uint8), epsilon=-1, num_steps=1,
                       key=jax.random.PRNGKey(0))
