"""The PGD engine against closed-form optima, and its contract on a tiny Glow."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.configs import common
from glow_ood import evaluate
from glow_ood import likelihood
from glow_ood import model_kinds
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
  model = model_kinds.build_model(config)
  y = (images.astype(np.float32) + 0.5) / 256
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(y))
  # A few random coupling weights, so the affine couplings depend on the input.
  leaves, tree = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  leaves = [l + 0.02 * jax.random.normal(k, l.shape) if l.ndim == 4 else l
            for l, k in zip(leaves, keys)]
  return config, model, dict(variables, params=jax.tree.unflatten(tree, leaves)), images


def _close(ours, theirs, name):
  """Equal at float32 round-off: a few ulps of the term's own scale (log p(x) is a sum of
  terms hundreds of nats large, so its round-off is that of its largest addend)."""
  theirs = np.asarray(theirs, np.float64)
  scale = max(float(np.abs(theirs).max()), 1.0)
  np.testing.assert_allclose(np.asarray(ours, np.float64), theirs, rtol=1e-6,
                             atol=4e-7 * scale, err_msg=name)


@pytest.mark.parametrize('dequantization, n_bits', [('uniform', 8), ('uniform', 5),
                                                    ('midpoint', 5)])
def test_attack_statistics_are_the_evaluation(dequantization, n_bits):
  """The float, differentiable core the attacks use (Evaluator.terms, inside a jit that also
  takes its gradient) equals the Evaluator's uint8 evaluation at integer pixels."""
  config, _, variables, images = _tiny_glow(n_bits=n_bits)
  evaluator = evaluate.Evaluator(config)
  key = jax.random.PRNGKey(3)
  theirs = evaluator(variables, images, batch_size=len(images),
                     dequantization=dequantization, key=key)

  @jax.jit
  def stats_and_grad(v, x, k):
    stats = evaluator.terms(v, x, k, dequantization)
    grad = jax.grad(lambda x: evaluator.terms(v, x, k, dequantization)['log_px'].sum())(x)
    return stats, grad
  ours, grad = jax.device_get(stats_and_grad(
      variables, jnp.asarray(images, jnp.float32), jax.random.fold_in(key, 0)))
  assert set(ours) == set(theirs) >= {'log_px', 'log_p_discrete', 'bits_per_dim', 'log_pz',
                                      'logdet_actnorm', 'logdet_invconv', 'logdet_coupling'}
  for name in theirs:
    _close(ours[name], theirs[name], name)
  # Differentiable in the pixels (the n-bit floor passes the gradient straight through).
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_terms_core_shares_the_uint8_noise():
  """The float path's dequantized input is the uint8 path's, bit for bit, and its uniform
  noise stays below 1 - 2^-16 (so floor(y * 2^n) recovers the pixel)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (4, 8, 8, 1)).astype(np.uint8)
  x[0] = 255
  key = jax.random.PRNGKey(11)
  for n_bits in (8, 5, 1):
    for noise in ('uniform', 'midpoint'):
      ours = likelihood.dequantize_pixels(key, jnp.asarray(x, jnp.float32), n_bits, noise)
      theirs = likelihood.dequantize_uint8(key, jnp.asarray(x), n_bits, noise)
      np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
      levels = np.floor(np.asarray(ours, np.float64) * 2 ** n_bits)
      np.testing.assert_array_equal(levels, x >> (8 - n_bits))
  u = likelihood.dequantization_noise(key, (1 << 20,), 'uniform')
  assert float(u.max()) <= 1.0 - 2.0 ** -16


def test_uint8_evaluation_is_the_core_exactly():
  """Evaluator.__call__ (uint8) is terms of the images cast to float: identical numbers."""
  config, _, variables, images = _tiny_glow(n_bits=5)
  evaluator = evaluate.Evaluator(config)
  key = jax.random.PRNGKey(4)
  theirs = evaluator(variables, images, batch_size=len(images), key=key)
  ours = jax.device_get(jax.jit(evaluator.terms)(variables, jnp.asarray(images, jnp.float32),
                                                 jax.random.fold_in(key, 0)))
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.mark.parametrize('coupling', ['affine', 'additive'])
def test_attack_contract_on_a_tiny_glow(coupling):
  """Within epsilon, valid integer pixels; the selection's objective is that of the
  Evaluator under the selection key; an independent key reports the effect."""
  config, _, variables, images = _tiny_glow(coupling)
  evaluator = evaluate.Evaluator(config)
  select_key, report_key = jax.random.PRNGKey(7), jax.random.PRNGKey(9)
  objective = attacks.signed_log_density_objective(evaluator.terms)
  sign = np.array([1.0, -1.0] * (len(images) // 2), np.float32)
  result = attacks.pgd_attack(objective, images, epsilon=2, num_steps=6,
                              key=jax.random.PRNGKey(8), noise_draws=2,
                              select_key=jax.random.fold_in(select_key, 0),
                              objective_args=(variables, sign))
  assert result.images.dtype == np.uint8 and result.images.shape == images.shape
  change = result.images.astype(np.int32) - images.astype(np.int32)
  assert np.abs(change).max() <= 2
  assert np.any(change != 0)
  np.testing.assert_array_equal(result.best_trace[-1], result.objective_after)

  def evaluated(x, key):
    return sign * evaluator(variables, x, batch_size=len(images), dequantization='uniform',
                            key=key)['log_p_discrete']
  # pgd's own judgement is the Evaluator's under the selection key, and (checked by that
  # evaluation, not by pgd's bookkeeping) never worse there.
  after_selection, before_selection = evaluated(result.images, select_key), evaluated(
      images, select_key)
  _close(result.objective_after, after_selection, 'after')
  _close(result.objective_before, before_selection, 'before')
  assert np.all(after_selection >= before_selection - 1e-3)
  # Under an independent key the change is what it is: raising raises and lowering lowers
  # on average, by about as much (the gain does not come from the selection's noise).
  gain = evaluated(result.images, report_key) - evaluated(images, report_key)
  selected_gain = after_selection - before_selection
  assert gain[sign > 0].mean() > 0 and gain[sign < 0].mean() > 0
  assert gain.mean() == pytest.approx(selected_gain.mean(), rel=0.5)


def test_evasion_objective_moves_a_score():
  """A score defined here (bits/dim) evaded: OOD images (sign -1) end with lower scores."""
  config, _, variables, images = _tiny_glow()
  evaluator = evaluate.Evaluator(config)
  stats_fn = functools.partial(evaluator.terms, dequantization='midpoint')
  objective = attacks.evasion_objective(stats_fn, lambda stats: stats['bits_per_dim'])
  key = jax.random.PRNGKey(0)
  result = attacks.pgd_attack(objective, images, epsilon=1, num_steps=4,
                              key=key, select_key=jax.random.fold_in(key, 0),
                              objective_args=(variables, -1.0))

  def bits_per_dim(x):
    return evaluator(variables, x, batch_size=len(x), dequantization='midpoint',
                     key=key)['bits_per_dim']
  after = bits_per_dim(result.images)
  _close(-after, result.objective_after, 'bits_per_dim')
  assert np.all(after < bits_per_dim(images))


def test_bad_inputs_raise():
  objective = _gaussian_objective(0.0, 1.0)
  with pytest.raises(ValueError, match='uint8'):
    attacks.pgd_attack(objective, np.zeros(SHAPE, np.float32), epsilon=1, num_steps=1,
                       key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='epsilon'):
    attacks.pgd_attack(objective, np.zeros(SHAPE, np.uint8), epsilon=-1, num_steps=1,
                       key=jax.random.PRNGKey(0))


_SHARDED_ATTACK = '''
import sys
import jax, numpy as np
from glow_ood import evaluate, parallel
from glow_ood.analysis import attacks
from tests.analysis.test_analysis_attacks import _tiny_glow
assert jax.device_count() == int(sys.argv[2]), jax.devices()
config, _, variables, images = _tiny_glow('affine', num=8)
mesh = parallel.make_mesh()
evaluator = evaluate.Evaluator(config, mesh)
variables = jax.device_put(variables, parallel.replicated(mesh))
objective = attacks.signed_log_density_objective(evaluator.terms)
sign = np.array([1.0, -1.0] * 4, np.float32)
result = attacks.pgd_attack(objective, images, epsilon=np.arange(8) % 3 + 1, num_steps=4,
                            key=jax.random.PRNGKey(8), noise_draws=2,
                            select_key=jax.random.PRNGKey(7), objective_args=(variables, sign),
                            mesh=mesh)
# The split path ran (one device keeps the plain jit).
assert (attacks._pgd_on.cache_info().currsize == 1) == (jax.device_count() > 1)
placed = attacks._place(mesh, images, 1.0, 1.0, jax.random.PRNGKey(0), jax.random.PRNGKey(1),
                        (variables, sign))
assert len(placed[0].addressable_shards) == len(placed[5][1].addressable_shards) == \
    jax.device_count()
np.savez(sys.argv[1], images=result.images, before=result.objective_before,
         after=result.objective_after, trace=result.trace, gain=result.first_order_gain)
'''


def test_attack_split_over_four_devices_is_the_one_device_attack(tmp_path):
  """Data parallel over a mesh (the split the Evaluator uses): the same images, objectives
  and trace as on one device, to float32 round-off."""
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  out = {}
  for devices in (1, 4):
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    path = tmp_path / f'{devices}.npz'
    subprocess.run([sys.executable, '-c', _SHARDED_ATTACK, str(path), str(devices)],
                   check=True, env=env, cwd=os.path.dirname(os.path.dirname(
                       os.path.dirname(os.path.abspath(__file__)))))
    out[devices] = dict(np.load(path))
  np.testing.assert_array_equal(out[4]['images'], out[1]['images'])
  for name in ('before', 'after', 'trace', 'gain'):
    _close(out[4][name], out[1][name], name)
