"""Graying experiment (paper, Section 5): push images toward a constant grey.

x_alpha = (1 - alpha) x + alpha g. The blend scales every pixel's deviation from
its mean by (1 - alpha), so the per-pixel variance over a data set becomes
(1 - alpha)^2 times the original; Section 5 predicts log p(x) then rises.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def default_grey(x: np.ndarray) -> float:
  """Mid-grey on the array's scale: 128 for integer pixels, 0.5 for floats in [0, 1]."""
  return 128.0 if np.issubdtype(np.asarray(x).dtype, np.integer) else 0.5


def blend_toward_grey(
    x: np.ndarray, alpha: float, grey: float | np.ndarray | None = None,
    round_to_input_dtype: bool = False) -> np.ndarray:
  """(1 - alpha) x + alpha * grey, as float64.

  `grey` is a constant (the paper's grey) or an array broadcastable to one image,
  such as a data set's mean image (which keeps each pixel's mean and shrinks only
  its variance).

  With `round_to_input_dtype` integer images are rounded back to their dtype
  (so a model that dequantizes integer pixels can take them); the rounding
  perturbs the exact (1 - alpha)^2 variance scaling by up to 1/12.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')
  x = np.asarray(x)
  grey = default_grey(x) if grey is None else grey
  blended = (1.0 - alpha) * x.astype(np.float64) + alpha * grey
  if round_to_input_dtype and np.issubdtype(x.dtype, np.integer):
    info = np.iinfo(x.dtype)
    return np.clip(np.rint(blended), info.min, info.max).astype(x.dtype)
  return blended


def graying_curve(
    score_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    alphas: Sequence[float],
    grey: float | np.ndarray | None = None,
    batch_size: int | None = None,
    round_to_input_dtype: bool = False,
) -> dict[str, np.ndarray]:
  """Mean log p(x_alpha) and its standard error for each alpha.

  `score_fn(batch)` returns per-example log p for a batch of images (as
  blended: float64, or the input dtype with `round_to_input_dtype`); it is
  called on chunks of `batch_size` images (all at once if None).

  Returns {'alpha': [A], 'mean_log_prob': [A], 'stderr': [A]}.
  """
  images = np.asarray(images)
  n = images.shape[0]
  if n < 2:
    raise ValueError('need at least two images for a standard error')
  step = n if batch_size is None else batch_size
  means, stderrs = [], []
  for alpha in alphas:
    scores = []
    for start in range(0, n, step):
      batch = blend_toward_grey(images[start:start + step], alpha, grey, round_to_input_dtype)
      scores.append(np.asarray(score_fn(batch), dtype=np.float64).reshape(-1))
    scores = np.concatenate(scores)
    if scores.shape[0] != n:
      raise ValueError(f'score_fn returned {scores.shape[0]} scores for {n} images')
    means.append(scores.mean())
    stderrs.append(scores.std(ddof=1) / np.sqrt(n))
  return {
      'alpha': np.asarray(alphas, dtype=np.float64),
      'mean_log_prob': np.asarray(means),
      'stderr': np.asarray(stderrs),
  }
