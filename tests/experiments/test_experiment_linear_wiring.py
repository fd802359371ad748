"""The weights the experiment extracts from a Glow param tree are the model's actual linear map.

A fresh CV-Glow with one level has zero-initialised additive couplings (identity)
and an N(0, I) top prior, so log p(y) = -||squeeze(y - 1/2) M + b||^2 / 2 + const,
exactly quadratic: the closed form must equal the model's own trace term, and the
measured E_q - E_p on Gaussian data up to Monte Carlo error.
"""

import jax
import jax.numpy as jnp
import numpy as np

from glow_ood import analysis
from glow_ood.experiment import model_analysis
from glow_ood.flows.glow import Glow
from glow_ood.flows.squeeze import squeeze
import ml_collections

SIZE, CHANNELS, STEPS = 8, 1, 3


def _fresh_cv_glow():
  config = ml_collections.ConfigDict()
  config.model = dict(num_levels=1, steps_per_level=STEPS, coupling='additive', invconv='lu',
                      coupling_net='glow', hidden_channels=4, num_highway_blocks=1,
                      learn_top_prior=True)
  config.n_bits = 8
  config.data = dict(image_size=SIZE, channels=CHANNELS)  # the model's input shape
  model = Glow(**config.model)
  rng = np.random.default_rng(0)
  init_batch = jnp.asarray(rng.uniform(0.1, 0.9, (16, SIZE, SIZE, CHANNELS)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(1), init_batch, method=Glow.forward)
  return config, model, variables


def _gaussian_sets(rng, num):
  mean = rng.uniform(0.3, 0.7, (SIZE, SIZE, CHANNELS))
  var_p = rng.uniform(0.005, 0.02, mean.shape)
  var_q = rng.uniform(0.001, 0.01, mean.shape)
  draw = lambda var: mean + np.sqrt(var) * rng.standard_normal((num,) + mean.shape)
  return mean, var_p, var_q, draw(var_p).astype(np.float32), draw(var_q).astype(np.float32)


def test_extracted_first_level_map_is_the_model_jacobian():
  _, model, variables = _fresh_cv_glow()
  weights, scales = model_analysis.first_level_linear_map(model, variables)
  matrix = analysis.linear_flow_matrix(weights, scales)
  rng = np.random.default_rng(2)
  y1, y2 = (jnp.asarray(rng.uniform(0, 1, (2, SIZE, SIZE, CHANNELS)), jnp.float32)
            for _ in range(2))
  z1 = model.apply(variables, y1, method=Glow.forward).latents[0]
  z2 = model.apply(variables, y2, method=Glow.forward).latents[0]
  expected = np.asarray(squeeze(y1) - squeeze(y2), np.float64) @ matrix
  np.testing.assert_allclose(np.asarray(z1 - z2), expected, rtol=1e-4, atol=1e-4)


def test_closed_form_equals_the_models_trace_term_and_the_measured_gap():
  config, model, variables = _fresh_cv_glow()
  rng = np.random.default_rng(3)
  mean, var_p, var_q, xs_p, xs_q = _gaussian_sets(rng, 4000)
  closed = model_analysis.cv_glow_closed_form_prediction(config, variables, var_p, var_q)

  # Exactly in expectation: log p is quadratic, so 1/2 sum_i H_ii d_i is the whole gap.
  log_prob = model_analysis.log_prob_fn(config, variables)
  exact = analysis.trace_term_diagonal_exact(log_prob, jnp.asarray(mean, jnp.float32),
                                             jnp.asarray(var_q - var_p, jnp.float32))
  np.testing.assert_allclose(closed['exact_for_linear'], exact, rtol=1e-3)

  # Monte Carlo: the measured difference of mean log p on Gaussian data with a shared mean.
  log_px = jax.jit(lambda y: model.apply(variables, y, method=Glow.forward).log_px)
  lp_p, lp_q = np.asarray(log_px(xs_p), np.float64), np.asarray(log_px(xs_q), np.float64)
  measured = lp_q.mean() - lp_p.mean()
  stderr = np.sqrt(lp_q.var() / lp_q.size + lp_p.var() / lp_p.size)
  assert abs(measured - closed['exact_for_linear']) < 4 * stderr, (measured, closed, stderr)
  assert closed['exact_for_linear'] > 0  # lower variance -> higher likelihood


def test_trace_predictions_on_the_quadratic_model():
  config, _, variables = _fresh_cv_glow()
  rng = np.random.default_rng(4)
  _, var_p, var_q, xs_p, xs_q = _gaussian_sets(rng, 256)
  # trace_predictions computes the variances from the samples it is given.
  _, var_p_hat = model_analysis.model_scale_stats(xs_p, 8)
  _, var_q_hat = model_analysis.model_scale_stats(xs_q, 8)
  closed = model_analysis.cv_glow_closed_form_prediction(config, variables, var_p_hat, var_q_hat)
  result = model_analysis.trace_predictions(
      config, variables, xs_p, xs_q, num_probes=64, sample_examples=256, chunk=16,
      key=jax.random.PRNGKey(5))
  assert abs(result['hutchinson'] - closed['exact_for_linear']) < 5 * result['hutchinson_stderr']
  # The sample form uses the full sample covariances (ddof=0, like the variances above), and
  # for a quadratic log p equals 1/2 Tr{H (S_q - S_p)}, whose diagonal part is the closed form;
  # the off-diagonal sample covariances of independent pixels are small.
  assert abs(result['sample_form'] - closed['exact_for_linear']) < 0.25 * abs(
      closed['exact_for_linear'])
