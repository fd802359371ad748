"""Second-order analysis: closed form vs brute force where the expansion is exact."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.analysis import second_order


@pytest.fixture
def float64():
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)


def _random_linear_cv_flow(rng, num_channels, num_steps):
  """Mixing (non-orthogonal) 1x1 weights, actnorm scales and biases per step."""
  weights, scales, biases = [], [], []
  for _ in range(num_steps):
    q, _ = np.linalg.qr(rng.normal(size=(num_channels, num_channels)))
    weights.append(q + 0.3 * rng.normal(size=(num_channels, num_channels)))
    scales.append(rng.uniform(0.5, 1.5, size=num_channels))
    biases.append(rng.normal(size=num_channels))
  return weights, scales, biases


def _make_flow_fns(weights, scales, biases, prior_std, squeeze=False):
  """z(x) and log p(x) of a linear constant-volume flow (couplings = identity)."""

  def flow(x_HxWxC):
    a = x_HxWxC
    if squeeze:
      h, w, c = a.shape
      a = a.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(h // 2, w // 2, 4 * c)
    for w_CxC, s_C, b_C in zip(weights, scales, biases):
      a = (a * s_C + b_C) @ w_CxC
    return a

  def log_prob(x_HxWxC):
    z = flow(x_HxWxC)
    num_pixels = z.shape[0] * z.shape[1]
    log_det = num_pixels * sum(
        jnp.sum(jnp.log(jnp.abs(s))) + jnp.linalg.slogdet(w)[1] for w, s in zip(weights, scales))
    log_prior = jnp.sum(-0.5 * (z / prior_std) ** 2 - 0.5 * jnp.log(2 * jnp.pi * prior_std**2))
    return log_prior + log_det

  return flow, log_prob


def _analytic_gap(flow, x0, var_q, var_p, prior_std):
  """E_q[log p] - E_p[log p] from the Jacobian of the affine map: Gaussians with shared mean x0."""
  jac_DxD = jax.jacfwd(lambda v: flow(v.reshape(x0.shape)).ravel())(x0.ravel())
  jac = np.asarray(jac_DxD)
  trace = lambda var: np.sum(jac**2 * np.ravel(var)[None, :])  # Tr(J diag(var) J^T)
  return -(trace(var_q) - trace(var_p)) / (2 * prior_std**2)


def test_closed_form_matches_brute_force_for_linear_flow(float64):
  rng = np.random.default_rng(0)
  height, width, channels, prior_std = 2, 2, 3, 0.7
  weights, scales, biases = _random_linear_cv_flow(rng, channels, num_steps=3)
  flow, log_prob = _make_flow_fns(weights, scales, biases, prior_std)
  shape = (height, width, channels)
  x0 = jnp.asarray(rng.uniform(0.3, 0.7, size=shape))  # shared, non-zero mean
  var_q = rng.uniform(0.005, 0.03, size=shape)
  var_p = rng.uniform(0.02, 0.06, size=shape)

  closed = second_order.cv_glow_closed_form(weights, var_q, var_p, prior_std, scales)
  analytic = _analytic_gap(flow, x0, var_q, var_p, prior_std)
  assert closed['predicted_diff'] > 0  # lower-variance q gets higher likelihood
  np.testing.assert_allclose(closed['predicted_diff'], analytic, rtol=1e-10)

  # Monte Carlo with many samples.
  num_samples = 200_000
  xs_q = x0 + np.sqrt(var_q) * rng.normal(size=(num_samples,) + shape)
  xs_p = x0 + np.sqrt(var_p) * rng.normal(size=(num_samples,) + shape)
  lp_q = np.asarray(jax.jit(jax.vmap(log_prob))(xs_q))
  lp_p = np.asarray(jax.jit(jax.vmap(log_prob))(xs_p))
  mc_gap = lp_q.mean() - lp_p.mean()
  mc_stderr = math.sqrt(lp_q.var() / num_samples + lp_p.var() / num_samples)
  assert abs(mc_gap - closed['predicted_diff']) < 5 * mc_stderr

  var_diff = jnp.asarray(var_q - var_p)
  exact_trace = second_order.trace_term_diagonal_exact(log_prob, x0, var_diff)
  np.testing.assert_allclose(exact_trace, closed['predicted_diff'], rtol=1e-10)

  hutchinson, stderr = second_order.trace_term_diagonal(
      log_prob, x0, var_diff, num_probes=500, key=jax.random.key(1), chunk_size=100)
  assert stderr > 0
  assert abs(hutchinson - closed['predicted_diff']) < 5 * stderr

  # Full-covariance form on finite samples: exact for the sample covariances ...
  small_q, small_p = xs_q[:4000], xs_p[:4000]
  from_samples = second_order.trace_term_from_samples(log_prob, x0, small_q, small_p, chunk_size=500)
  hess = np.asarray(second_order.hessian_matrix(log_prob, x0))
  cov = lambda xs: np.cov(xs.reshape(xs.shape[0], -1), rowvar=False, bias=True)
  expected = 0.5 * np.trace(hess @ (cov(small_q) - cov(small_p)))
  np.testing.assert_allclose(from_samples['estimate'], expected, rtol=1e-8)
  # ... and close to the population value.
  assert abs(from_samples['estimate'] - closed['predicted_diff']) < 5 * from_samples['stderr']


def test_closed_form_in_squeezed_space(float64):
  """A level that squeezes first: closed form on squeezed variances equals the exact gap."""
  rng = np.random.default_rng(2)
  prior_std = 1.3
  weights, scales, biases = _random_linear_cv_flow(rng, num_channels=4, num_steps=2)
  flow, _ = _make_flow_fns(weights, scales, biases, prior_std, squeeze=True)
  shape = (4, 4, 1)
  x0 = jnp.asarray(rng.uniform(size=shape))
  var_q = rng.uniform(0.01, 0.05, size=shape)
  var_p = rng.uniform(0.01, 0.05, size=shape)
  analytic = _analytic_gap(flow, x0, var_q, var_p, prior_std)
  closed = second_order.cv_glow_closed_form(
      weights, second_order.squeeze_variances(var_q), second_order.squeeze_variances(var_p),
      prior_std, scales)
  np.testing.assert_allclose(closed['predicted_diff'], analytic, rtol=1e-10)
  with pytest.raises(ValueError, match='squeeze'):
    second_order.cv_glow_closed_form(weights, var_q, var_p, prior_std, scales)


def test_squeeze_variances_layout_and_custom_fn():
  var = np.arange(16, dtype=np.float64).reshape(4, 4, 1)
  squeezed = second_order.squeeze_variances(var)
  assert squeezed.shape == (2, 2, 4)
  # Channel (dh * 2 + dw) holds pixel (2h + dh, 2w + dw).
  np.testing.assert_array_equal(squeezed[0, 0], [0, 1, 4, 5])
  np.testing.assert_array_equal(squeezed[1, 1], [10, 11, 14, 15])
  calls = []

  def model_squeeze(x_NxHxWxC):
    calls.append(x_NxHxWxC.shape)
    return x_NxHxWxC.reshape(1, 2, 2, 2, 2, 1).transpose(0, 1, 3, 5, 4, 2).reshape(1, 2, 2, 4)

  custom = second_order.squeeze_variances(var, squeeze_fn=model_squeeze)
  assert calls == [(1, 4, 4, 1)]
  np.testing.assert_array_equal(custom[0, 0], [0, 4, 1, 5])  # order (dw, dh): the model's own


def test_paper_alpha_equals_exact_coefficient_for_diagonal_weights():
  weights = [np.diag([2.0, 3.0]), np.diag([0.5, -1.0])]
  scales = [np.array([1.0, 2.0]), np.array([1.0, 1.0])]
  var_q = np.full((1, 1, 2), 0.1)
  var_p = np.full((1, 1, 2), 0.3)
  out = second_order.cv_glow_closed_form(weights, var_q, var_p, 1.0, scales)
  # By hand: M = diag(2 * 0.5, 2 * 3 * -1) = diag(1, -6).
  np.testing.assert_allclose(out['coefficients'], [1.0, 36.0])
  np.testing.assert_allclose(out['paper_alpha'], [1.0, -6.0])
  np.testing.assert_allclose(out['variance_sum_diff'], [-0.2, -0.2])
  np.testing.assert_allclose(out['predicted_diff'], 0.5 * 0.2 * 37)
  np.testing.assert_allclose(out['predicted_diff_paper'], out['predicted_diff'])


def test_paper_alpha_differs_for_mixing_weights():
  # Shear W = [[1, 1], [0, 1]]: row 0 of M is (1, 1). Exact: 1^2 + 1^2 = 2. The paper
  # squares the row sum, (1 + 1)^2 = 4, adding the cross term 2 * u00 * u01 = 2.
  var_q, var_p = np.zeros((1, 1, 2)), np.ones((1, 1, 2))
  out = second_order.cv_glow_closed_form([np.array([[1.0, 1.0], [0.0, 1.0]])], var_q, var_p, 1.0)
  np.testing.assert_allclose(out['coefficients'], [2.0, 1.0])
  np.testing.assert_allclose(out['paper_alpha'] ** 2, [4.0, 1.0])
  np.testing.assert_allclose(out['predicted_diff'], 1.5)
  np.testing.assert_allclose(out['predicted_diff_paper'], 2.5)
  # A rotation preserves norms (exact coefficient 1), row sums do not.
  angle = 0.4
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  out = second_order.cv_glow_closed_form([rotation, rotation.T @ rotation], var_q, var_p, 1.0)
  np.testing.assert_allclose(out['coefficients'], [1.0, 1.0])
  assert not np.allclose(out['paper_alpha'] ** 2, out['coefficients'], rtol=1e-3)


def test_hutchinson_matches_exact_hessian_on_nonlinear_function(float64):
  rng = np.random.default_rng(3)
  shape = (2, 2, 2)
  dim = 8
  mixing = jnp.asarray(rng.normal(size=(dim, dim)))
  offset = jnp.asarray(rng.normal(size=dim))
  readout = jnp.asarray(rng.normal(size=dim))

  def log_prob(x_HxWxC):
    return jnp.dot(readout, jnp.tanh(mixing @ x_HxWxC.ravel() + offset))

  x0 = jnp.asarray(rng.normal(size=shape) * 0.3)
  var_diff = jnp.asarray(rng.normal(size=shape))
  exact = second_order.trace_term_diagonal_exact(log_prob, x0, var_diff)
  hess = np.asarray(second_order.hessian_matrix(log_prob, x0))
  np.testing.assert_allclose(exact, 0.5 * np.sum(np.diag(hess) * np.ravel(var_diff)))
  estimate, stderr = second_order.trace_term_diagonal(
      log_prob, x0, var_diff, num_probes=2000, key=jax.random.key(0), chunk_size=250)
  assert stderr > 0  # the Hessian is not diagonal, so probes really vary
  assert abs(estimate - exact) < 4 * stderr
