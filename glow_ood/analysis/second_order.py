"""Second-order analysis of the likelihood gap (paper, Section 5).

Let p* be the training distribution and q another data set with the same mean
x0. Expanding log p(x) to second order around x0 and taking expectations, the
first-order term cancels (E_q[x - x0] = E_p*[x - x0] = 0), leaving

    E_q[log p(x)] - E_p*[log p(x)] ~= 1/2 Tr{ H (Sigma_q - Sigma_p*) },
    H = grad^2_x log p(x0).

The functions here evaluate the right-hand side three ways:

* `trace_term_diagonal` / `trace_term_diagonal_exact`: Sigma_q - Sigma_p* taken
  to be diagonal, d = var_q - var_p per pixel and channel, so the term is
  1/2 sum_i H_ii d_i (Hutchinson with Hessian-vector products, or the full
  Hessian for small inputs).
* `trace_term_from_samples`: the full sample covariances, no diagonal
  assumption, via quadratic forms of centred samples.
* `cv_glow_closed_form`: the paper's closed form for constant-volume Glow.

`log_prob_fn` always maps one image x[H, W, C] to a scalar log density (a jax
function; a model's log p(x) at fixed parameters, or any test function).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LogProbFn = Callable[[jax.Array], jax.Array]


# -----------------------------------------------------------------------------
# General trace form.


def hessian_vector_product(log_prob_fn: LogProbFn, x0: jax.Array, v: jax.Array) -> jax.Array:
  """H v with H = grad^2 log_prob_fn(x0); forward-over-reverse, never forms H."""
  return jax.jvp(jax.grad(log_prob_fn), (x0,), (v,))[1]


def hessian_matrix(log_prob_fn: LogProbFn, x0: jax.Array) -> jax.Array:
  """Full Hessian [D, D] over the flattened image, D = H*W*C. Small inputs only."""
  shape = x0.shape
  flat_fn = lambda x_D: log_prob_fn(x_D.reshape(shape))
  return jax.hessian(flat_fn)(jnp.ravel(x0))


def trace_term_diagonal_exact(log_prob_fn: LogProbFn, x0: jax.Array, var_diff: jax.Array) -> float:
  """1/2 sum_i H_ii d_i from the full Hessian (reference for tests and tiny images)."""
  hess_DxD = hessian_matrix(log_prob_fn, x0)
  return float(0.5 * jnp.sum(jnp.diag(hess_DxD) * jnp.ravel(var_diff)))


def trace_term_diagonal(
    log_prob_fn: LogProbFn,
    x0: jax.Array,
    var_diff: jax.Array,
    num_probes: int,
    key: jax.Array,
    chunk_size: int = 16,
) -> tuple[float, float]:
  """Hutchinson estimate of 1/2 sum_i H_ii d_i and its standard error.

  With Rademacher probes v (E[v v^T] = I), v^T H (d * v) has expectation
  sum_ij H_ij d_j E[v_i v_j] = sum_i H_ii d_i. Probes are drawn per key inside
  `lax.map`, `chunk_size` at a time, so memory stays at a few images per chunk
  whatever `num_probes` is.

  Returns (estimate, standard error of the estimate over probes).
  """
  if num_probes < 2:
    raise ValueError('num_probes must be at least 2 to give a standard error')
  x0 = jnp.asarray(x0)
  var_diff = jnp.asarray(var_diff, dtype=x0.dtype)
  if var_diff.shape != x0.shape:
    raise ValueError(f'var_diff shape {var_diff.shape} != x0 shape {x0.shape}')

  def one_probe(probe_key):
    v = jax.random.rademacher(probe_key, x0.shape, dtype=x0.dtype)
    return jnp.vdot(v, hessian_vector_product(log_prob_fn, x0, var_diff * v))

  keys = jax.random.split(key, num_probes)
  samples = jax.jit(lambda k: jax.lax.map(one_probe, k, batch_size=chunk_size))(keys)
  samples = np.asarray(samples, dtype=np.float64)
  estimate = 0.5 * samples.mean()
  stderr = 0.5 * samples.std(ddof=1) / np.sqrt(num_probes)
  return float(estimate), float(stderr)


def trace_term_from_samples(
    log_prob_fn: LogProbFn,
    x0: jax.Array,
    xs_q: jax.Array,
    xs_p: jax.Array,
    chunk_size: int = 16,
) -> dict[str, float]:
  """1/2 [mean_i (x_i - mu_q)^T H (x_i - mu_q) - mean_j (x_j - mu_p)^T H (x_j - mu_p)].

  xs_q [Nq, H, W, C] and xs_p [Np, H, W, C] are centred on their own sample
  means, so the value equals 1/2 Tr{H (S_q - S_p)} with S the 1/N sample
  covariances, cross-pixel and cross-channel entries included. One HVP per
  sample, `chunk_size` samples at a time.

  Returns a dict: 'estimate', 'quad_q' and 'quad_p' (the two mean quadratic
  forms), and 'stderr', the sampling error of the estimate treating the
  quadratic forms as independent draws.
  """
  x0 = jnp.asarray(x0)

  def mean_quadratic_form(xs_NxHxWxC):
    xs = jnp.asarray(xs_NxHxWxC, dtype=x0.dtype)
    if xs.shape[1:] != x0.shape:
      raise ValueError(f'samples of shape {xs.shape[1:]} do not match x0 {x0.shape}')
    centred = xs - xs.mean(axis=0)
    quad = lambda u: jnp.vdot(u, hessian_vector_product(log_prob_fn, x0, u))
    forms = jax.jit(lambda c: jax.lax.map(quad, c, batch_size=chunk_size))(centred)
    forms = np.asarray(forms, dtype=np.float64)
    return forms.mean(), forms.var(ddof=1) / forms.size if forms.size > 1 else np.nan

  quad_q, sq_err_q = mean_quadratic_form(xs_q)
  quad_p, sq_err_p = mean_quadratic_form(xs_p)
  return {
      'estimate': float(0.5 * (quad_q - quad_p)),
      'quad_q': float(quad_q),
      'quad_p': float(quad_p),
      'stderr': float(0.5 * np.sqrt(sq_err_q + sq_err_p)),
  }


# -----------------------------------------------------------------------------
# Constant-volume Glow in closed form.


def squeeze_variances(
    var_HxWxC: np.ndarray, squeeze_fn: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
  """Per-pixel variances moved to the space the first Glow level sees: [H/2, W/2, 4C].

  A squeeze only permutes pixels, so the variance of a squeezed entry is the
  variance of the pixel it came from: squeezing the variance map is exact.
  If `squeeze_fn` is given (the model's own squeeze, acting on NHWC batches) it
  is applied to var[None] so the channel order matches the model's 1x1
  weights. Otherwise the default order is: reshape [H/2, 2, W/2, 2, C],
  transpose to [H/2, W/2, 2, 2, C], reshape, i.e. squeezed channel
  (dh * 2 + dw) * C + c holds pixel (2h + dh, 2w + dw, c).
  """
  var = np.asarray(var_HxWxC)
  if squeeze_fn is not None:
    return np.asarray(squeeze_fn(var[None]))[0]
  h, w, c = var.shape
  if h % 2 or w % 2:
    raise ValueError(f'spatial size must be even to squeeze, got {var.shape}')
  return var.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(h // 2, w // 2, 4 * c)


def linear_flow_matrix(
    weights: Sequence[np.ndarray], actnorm_scales: Sequence[np.ndarray] | None = None
) -> np.ndarray:
  """M = prod_k diag(s_k) W_k (step order), so the linearised flow is z = x @ M + const."""
  weights = [np.asarray(w, dtype=np.float64) for w in weights]
  if not weights:
    raise ValueError('need at least one 1x1-conv weight matrix')
  if actnorm_scales is None:
    actnorm_scales = [np.ones(w.shape[0]) for w in weights]
  if len(actnorm_scales) != len(weights):
    raise ValueError('one actnorm scale vector per step is needed')
  num_channels = weights[0].shape[0]
  product_CxC = np.eye(num_channels)
  for w_CxC, scale_C in zip(weights, actnorm_scales):
    if w_CxC.shape != (num_channels, num_channels):
      raise ValueError(f'weights must all be [{num_channels}, {num_channels}], got {w_CxC.shape}')
    product_CxC = product_CxC @ (np.asarray(scale_C, dtype=np.float64)[:, None] * w_CxC)
  return product_CxC


def cv_glow_closed_form(
    weights: Sequence[np.ndarray],
    var_q: np.ndarray,
    var_p: np.ndarray,
    prior_std: float,
    actnorm_scales: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray | float]:
  """Predicted E_q[log p(x)] - E_p[log p(x)] for constant-volume Glow, couplings as identity.

  Convention. A pixel is a row vector x in R^C. Step k applies actnorm then
  the 1x1 conv with kernel W_k[in, out]:
      a_c = s_{k,c} x_c + b_{k,c},    y_j = sum_c a_c W_k[c, j]   (y = a @ W_k).
  With the additive couplings replaced by the identity, K steps give
      z = x @ M + const,   M = diag(s_1) W_1 diag(s_2) W_2 ... diag(s_K) W_K,
  i.e. z = A x + const in column form with A = M^T. The same M acts on every
  pixel.

  Exact coefficient. With prior N(0, sigma^2 I) and a log-det that does not
  depend on x, log p(x) = -sum_{h,w} ||z_{h,w}||^2 / (2 sigma^2) + const, a
  quadratic; its Hessian is block diagonal over pixels with block
  -M M^T / sigma^2 = -A^T A / sigma^2. For a diagonal covariance difference
  d_{h,w,c} = var_q - var_p, 1/2 Tr{H D} keeps only the diagonal of M M^T:
      prediction = -1/(2 sigma^2) sum_c ||A e_c||^2 sum_{h,w} d_{h,w,c},
      ||A e_c||^2 = sum_j M[c, j]^2,
  the squared norm of row c of M (the output a unit input on channel c makes),
  summed over the output index j. For a linear flow the second-order
  expansion has no remainder, and the biases drop out because the means are
  shared, so this is exact. Cross-channel covariance differences within a
  pixel would add sum_{c != c'} (M M^T)_{cc'} (Sigma_q - Sigma_p)_{cc'} and are
  ignored here (`trace_term_from_samples` includes them).

  The paper's coefficient, reported beside it. The paper uses
      alpha_c = prod_k sum_j u_{k,c,j},  here u_{k,c,j} = s_{k,c} W_k[c, j],
  the product over steps of the row sums of each step's matrix, again summing
  over the output index j for input channel c (with no actnorm scales given,
  u = W). Two approximations separate it from the exact value:
  (i) within a step it squares the sum of the derivatives dz_j/dx_c instead of
  summing their squares, (sum_j u_cj)^2 = sum_j u_cj^2 + sum_{j != j'} u_cj u_cj',
  adding cross terms; (ii) across steps it multiplies per-step row sums as if
  channel c's signal stayed in channel c, whereas the chain rule multiplies
  matrices. Both approximations vanish when every W_k is diagonal, where
  alpha_c = prod_k s_{k,c} W_k[c, c] = M[c, c] and alpha_c^2 = ||A e_c||^2. For a
  mixing W (e.g. a rotation, whose exact coefficient is 1 without actnorm)
  they differ.

  Multi-scale Glow. The first level squeezes 2x2 space to depth before its
  steps, so its weights are [4C, 4C] and the variances must be given in the
  squeezed space: pass `squeeze_variances(var)` ([H/2, W/2, 4C]), with the
  model's own squeeze if its channel order differs from the default. For
  L > 1 the factored-out channels are scored by a learned conditional prior;
  that is outside this closed form (use the trace functions with the model's
  log p instead).

  Args:
    weights: 1x1-conv kernels W_k[in, out], [C, C] each, in step order.
    var_q, var_p: per-pixel, per-channel variances [H, W, C] of the two data
      sets, on the model's input scale.
    prior_std: sigma of the N(0, sigma^2 I) prior.
    actnorm_scales: per-step actnorm scales [C] (multiplying before W_k), or
      None for no actnorm. For an actnorm y = (x + b) * exp(log_scale) pass
      exp(log_scale); where the bias sits does not matter (means are shared).

  Returns a dict with 'coefficients' (||A e_c||^2, [C]), 'variance_sum_diff'
  (sum_{h,w}(var_q - var_p), [C]), 'predicted_diff', 'paper_alpha' ([C]),
  'predicted_diff_paper' and 'matrix' (M).
  """
  var_q = np.asarray(var_q, dtype=np.float64)
  var_p = np.asarray(var_p, dtype=np.float64)
  if var_q.shape != var_p.shape or var_q.ndim != 3:
    raise ValueError(f'var_q {var_q.shape} and var_p {var_p.shape} must both be [H, W, C]')
  matrix_CxC = linear_flow_matrix(weights, actnorm_scales)
  if matrix_CxC.shape[0] != var_q.shape[-1]:
    raise ValueError(
        f'weights act on {matrix_CxC.shape[0]} channels but variances have {var_q.shape[-1]}; '
        'squeeze the variances (squeeze_variances) to match the level.')
  coefficients_C = np.sum(matrix_CxC**2, axis=1)
  variance_sum_diff_C = (var_q - var_p).sum(axis=(0, 1))

  if actnorm_scales is None:
    actnorm_scales = [np.ones(np.shape(w)[0]) for w in weights]
  paper_alpha_C = np.ones_like(coefficients_C)
  for w_CxC, scale_C in zip(weights, actnorm_scales):
    paper_alpha_C = paper_alpha_C * (np.asarray(scale_C, np.float64) * np.asarray(w_CxC, np.float64).sum(axis=1))

  scale = -1.0 / (2.0 * prior_std**2)
  return {
      'coefficients': coefficients_C,
      'variance_sum_diff': variance_sum_diff_C,
      'predicted_diff': float(scale * np.dot(coefficients_C, variance_sum_diff_C)),
      'paper_alpha': paper_alpha_C,
      'predicted_diff_paper': float(scale * np.dot(paper_alpha_C**2, variance_sum_diff_C)),
      'matrix': matrix_CxC,
  }
