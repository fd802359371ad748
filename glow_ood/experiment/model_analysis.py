"""A trained model seen as a function of pixels: Section 5's second-order terms and graying.

Scale. The model takes y = (x_n + u) / 2^n in [0, 1); pixel statistics come from
glow_ood.analysis.statistics on the same scale without the noise u (its
variance is the same for every data set and cancels in differences; its mean
1/2^(n+1) is added to the expansion point x0 here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from glow_ood import analysis
from glow_ood import evaluate
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood.flows.glow import Glow
from glow_ood.flows.squeeze import squeeze

# CV-Glow's priors start as N(0, I); the closed form assumes one such prior on the
# whole output of the first level (see cv_glow_closed_form_prediction).
CLOSED_FORM_PRIOR_STD = 1.0


def log_prob_fn(model_config: ml_collections.ConfigDict, variables):
  """y [H, W, C] (float, model scale) -> log p(y), nats, at fixed variables (model.init's dict)."""
  model = model_kinds.build_model(model_config, evaluation=True)

  def fn(y_HxWxC):
    out = model.apply(variables, y_HxWxC[None], method=Glow.forward)
    return out.log_px[0]
  return fn


def first_level_linear_map(model: Glow, variables) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(1x1-conv weights [in, out], actnorm scales) of the first level's steps, in step order.

  With the couplings taken as identity these K (ActNorm, 1x1 conv) pairs are the
  whole first level: z = squeeze(y - 1/2) @ M + const,
  M = diag(s_1) W_1 ... diag(s_K) W_K.
  """
  weights, scales = jax.device_get(
      model.apply(variables, method=Glow.first_level_linear_map))
  return ([np.asarray(w, np.float64) for w in weights],
          [np.asarray(s, np.float64) for s in scales])


def model_scale_stats(images: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel mean (dequantization noise's mean included) and variance, [H, W, C] each."""
  mean, var, _ = analysis.dataset_pixel_stats(images, n_bits)
  return mean + 0.5 / 2**n_bits, var


def _squeeze_np(x_NxHxWxC: np.ndarray) -> np.ndarray:
  return np.asarray(squeeze(jnp.asarray(x_NxHxWxC)))


def cv_glow_closed_form_prediction(model_config, variables, var_p: np.ndarray,
                                   var_q: np.ndarray) -> dict:
  """The CV-Glow closed form from the first level's weights and the squeezed variances.

  Approximations: the additive couplings are treated as the identity (exact only
  at initialisation), the first level's whole output is scored by one
  N(0, CLOSED_FORM_PRIOR_STD^2) prior (the learned split prior and all later
  levels are ignored), and only the per-pixel variance differences enter
  (cross-pixel and cross-channel covariances are dropped).
  """
  weights, scales = first_level_linear_map(model_kinds.build_model(model_config),
                                           variables)
  result = analysis.cv_glow_closed_form(
      weights, analysis.squeeze_variances(var_q, _squeeze_np),
      analysis.squeeze_variances(var_p, _squeeze_np), CLOSED_FORM_PRIOR_STD,
      actnorm_scales=scales)
  return {
      'exact_for_linear': result['predicted_diff'],
      'paper_alpha': result['predicted_diff_paper'],
      'coefficients': result['coefficients'].tolist(),
      'alpha': result['paper_alpha'].tolist(),
      'variance_sum_diff': result['variance_sum_diff'].tolist(),
  }


def trace_predictions(model_config, variables, images_p: np.ndarray, images_q: np.ndarray, *,
                      num_probes: int, sample_examples: int, chunk: int, key) -> dict:
  """The general trace form 1/2 Tr{H (Sigma_q - Sigma_p)} with H the model's Hessian at x0.

  x0 is the mean of p's images (the expansion assumes q shares it; the ignored
  first-order term grad log p(x0) . (mu_q - mu_p) is reported beside it). Two
  estimators: Hutchinson on the diagonal variance difference (drops every
  covariance), and the sample form on `sample_examples` images of each set
  (full covariances, but sampling error).
  """
  n_bits = model_config.n_bits
  mean_p, var_p = model_scale_stats(images_p, n_bits)
  mean_q, var_q = model_scale_stats(images_q, n_bits)
  fn = log_prob_fn(model_config, variables)
  x0 = jnp.asarray(mean_p, jnp.float32)
  hutchinson_key, _ = jax.random.split(key)
  estimate, stderr = analysis.trace_term_diagonal(
      fn, x0, jnp.asarray(var_q - var_p, jnp.float32), num_probes, hutchinson_key,
      chunk_size=chunk)
  gradient = np.asarray(jax.jit(jax.grad(fn))(x0), np.float64)
  result = {
      'hutchinson': estimate, 'hutchinson_stderr': stderr, 'hutchinson_probes': num_probes,
      'first_order_ignored': float(np.sum(gradient * (mean_q - mean_p))),
      # Discrete bound at x0, comparable with the evaluated log p(x): the expansion
      # pictures x0 as a high-density point, which a trained flow need not agree with.
      'log_p_at_x0': float(likelihood.discrete_log_prob(fn(x0), int(np.prod(x0.shape)), n_bits)),
  }
  if sample_examples:
    def model_scale(images):
      return analysis.to_model_scale(images[:sample_examples], n_bits).astype(np.float32)
    samples = analysis.trace_term_from_samples(
        fn, x0, model_scale(images_q), model_scale(images_p), chunk_size=chunk)
    result.update(sample_form=samples['estimate'], sample_form_stderr=samples['stderr'],
                  sample_form_examples=int(min(sample_examples, len(images_p), len(images_q))))
  return result


GRAYING_TARGETS = {
    'grey': 'toward the constant grey 128 (the paper\'s graying)',
    'mean_image': 'toward the set\'s own per-pixel mean image (variance shrinks, mean kept)',
}


def graying(evaluator: evaluate.Evaluator, variables, images: np.ndarray, alphas, key,
            target: str = 'grey') -> dict:
  """Mean log p(x) (discrete bound, nats) of images blended toward a target, per alpha.

  target 'grey': x_a = (1 - a) x + a 128, which also moves the mean (far, for
  dark-background grey data). 'mean_image': x_a = (1 - a) x + a mean(x), which
  keeps every pixel's mean over the set and scales its variance by (1 - a)^2,
  the premise of the second-order analysis. Blended images are rounded back to
  uint8 so the model scores them like data (same dequantization as evaluation).
  """
  if target == 'grey':
    grey = 128.0
  elif target == 'mean_image':
    grey = np.asarray(images, np.float64).mean(axis=0)
  else:
    raise ValueError(f'Unknown graying target {target!r}; choose from {list(GRAYING_TARGETS)}.')

  def score(batch_uint8):
    results = evaluator(variables, batch_uint8, key=key)
    return results['log_p_discrete']
  curve = analysis.graying_curve(score, images, list(alphas), grey=grey,
                                 round_to_input_dtype=True)
  return {k: v.tolist() for k, v in curve.items()}
