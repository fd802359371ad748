"""Densities fitted to per-image model statistics (the DoSE family of scores).

Fitting is numpy on in-distribution training statistics; evaluation is jnp, so
a score built on it can be differentiated (the attacks push images through it).
Features are standardised with the training mean and standard deviation first,
and columns that are constant on the training set (ActNorm and 1x1-conv
log-dets, which no input changes) are dropped: they carry no information and
would make the densities degenerate.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

# A column counts as constant when its spread is below this, relative to its size.
_CONSTANT_RTOL = 1e-6


@flax.struct.dataclass
class Standardizer:
  """Which columns to keep, and their training mean and standard deviation."""
  keep: tuple[int, ...] = flax.struct.field(pytree_node=False)  # kept column indices
  mean: jax.Array   # [F_kept]
  std: jax.Array    # [F_kept]

  def __call__(self, features: jax.Array) -> jax.Array:
    return (features[..., list(self.keep)] - self.mean) / self.std


def fit_standardizer(features: np.ndarray) -> Standardizer:
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'Need features [N >= 2, F] to fit on, got shape {features.shape}.')
  mean, std = features.mean(0), features.std(0)
  keep = std > _CONSTANT_RTOL * (1.0 + np.abs(mean))
  if not keep.any():
    raise ValueError('Every feature is constant on the training set: nothing to fit.')
  return Standardizer(keep=tuple(int(i) for i in np.flatnonzero(keep)), mean=jnp.asarray(mean[keep], jnp.float32),
                      std=jnp.asarray(std[keep], jnp.float32))


@flax.struct.dataclass
class ProductKDE:
  """Sum over features of a 1-D Gaussian kernel density estimate's log density.

  The per-feature (independent) form is the one DoSE reports; a kernel density
  in the joint space needs far more training points than the few thousand an
  experiment evaluates. Bandwidth: Scott's rule on standardised data, n^(-1/5).
  """
  standardize: Standardizer
  centers: jax.Array    # [N, F_kept], standardised training features
  bandwidth: float = flax.struct.field(pytree_node=False)

  def log_density(self, features: jax.Array) -> jax.Array:
    """features [B, F] -> [B], nats (sum of the per-feature log densities)."""
    x = self.standardize(features)
    u = (x[:, None, :] - self.centers[None]) / self.bandwidth        # [B, N, F]
    log_kernel = -0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(self.bandwidth)
    per_feature = jax.nn.logsumexp(log_kernel, axis=1) - jnp.log(self.centers.shape[0])
    return per_feature.sum(-1)


def fit_product_kde(features: np.ndarray) -> ProductKDE:
  standardize = fit_standardizer(features)
  centers = standardize(jnp.asarray(features, jnp.float32))
  return ProductKDE(standardize=standardize, centers=centers,
                    bandwidth=float(centers.shape[0]) ** -0.2)


@flax.struct.dataclass
class Gaussian:
  """A joint Gaussian on standardised features: keeps the correlations between terms.

  log p(z) and the log-det of a flow are strongly anti-correlated across images;
  an image whose terms break that relation is atypical even when each term
  alone looks ordinary, which the per-feature KDE cannot see.
  """
  standardize: Standardizer
  mean: jax.Array          # [F_kept]
  precision_chol: jax.Array  # [F_kept, F_kept], lower Cholesky factor of the precision
  log_norm: jax.Array      # [] log normalising constant

  def log_density(self, features: jax.Array) -> jax.Array:
    x = self.standardize(features) - self.mean
    mahalanobis = jnp.sum((x @ self.precision_chol) ** 2, axis=-1)
    return self.log_norm - 0.5 * mahalanobis


def fit_gaussian(features: np.ndarray, ridge: float = 1e-3) -> Gaussian:
  """Maximum-likelihood mean and covariance, plus `ridge` (standardised units) on the diagonal."""
  standardize = fit_standardizer(features)
  x = np.asarray(standardize(jnp.asarray(features, jnp.float32)), np.float64)
  mean = x.mean(0)
  cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]) + ridge * np.eye(x.shape[1])
  precision = np.linalg.inv(cov)
  chol = np.linalg.cholesky(precision)
  dim = x.shape[1]
  log_norm = -0.5 * (dim * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1])
  return Gaussian(standardize=standardize, mean=jnp.asarray(mean, jnp.float32),
                  precision_chol=jnp.asarray(chol, jnp.float32),
                  log_norm=jnp.asarray(log_norm, jnp.float32))


def kept_columns(model) -> np.ndarray:
  """Indices of the feature columns a fitted density uses."""
  return np.asarray(model.standardize.keep, np.int64)


__all__ = ['Standardizer', 'ProductKDE', 'Gaussian', 'fit_standardizer', 'fit_product_kde',
           'fit_gaussian', 'kept_columns']
