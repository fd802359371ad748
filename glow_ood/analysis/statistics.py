"""Pixel statistics of image data sets (paper: Figure 6 and the inputs of Section 5).

Scale. Every function first maps pixels to the scale the model sees. Integer
pixels x in {0, ..., 255} are reduced to n bits, x_n = floor(x / 2^(8-n)), and
divided by 2^n, i.e. the model input y = (x_n + u) / 2^n without the
dequantization noise u. The noise adds the same variance 1 / (12 * 4^n) to
every pixel of every data set, so it cancels in the variance differences the
second-order analysis uses and is left out here. Float inputs are taken to be
on the model's scale already and pass through unchanged.

Variances are population variances (divide by the count, ddof=0).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def to_model_scale(x: np.ndarray, n_bits: int = 8) -> np.ndarray:
  """uint8-like integers -> float64 x_n / 2^n after n-bit reduction; floats unchanged (as float64)."""
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.integer):
    if not 1 <= n_bits <= 8:
      raise ValueError(f'n_bits must be in [1, 8], got {n_bits}')
    reduced = np.floor_divide(x.astype(np.int64), 2 ** (8 - n_bits))
    return reduced.astype(np.float64) / 2.0**n_bits
  return x.astype(np.float64)


def per_image_channel_stats(x_NxHxWxC: np.ndarray, n_bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Per image and channel, the mean and variance over its H*W pixels: two [N, C] arrays."""
  x = to_model_scale(x_NxHxWxC, n_bits)
  if x.ndim != 4:
    raise ValueError(f'expected NHWC images, got shape {x.shape}')
  return x.mean(axis=(1, 2)), x.var(axis=(1, 2))


def dataset_pixel_stats(
    images: np.ndarray | Iterable[np.ndarray], n_bits: int = 8
) -> tuple[np.ndarray, np.ndarray, int]:
  """Mean image and per-pixel, per-channel variance over examples.

  `images` is one [N, H, W, C] array or an iterable of such batches (so a whole
  data set can be streamed). Batches are merged with the pairwise update of
  Chan et al., which avoids the cancellation of the sum-of-squares formula.

  Returns (mean_HxWxC, var_HxWxC, count).
  """
  if isinstance(images, np.ndarray):
    images = [images]
  count, mean, m2 = 0, None, None
  for batch in images:
    x = to_model_scale(batch, n_bits)
    if x.ndim != 4:
      raise ValueError(f'expected NHWC batches, got shape {x.shape}')
    n_b = x.shape[0]
    if n_b == 0:
      continue
    mean_b = x.mean(axis=0)
    m2_b = ((x - mean_b) ** 2).sum(axis=0)
    if mean is None:
      count, mean, m2 = n_b, mean_b, m2_b
      continue
    total = count + n_b
    delta = mean_b - mean
    mean = mean + delta * (n_b / total)
    m2 = m2 + m2_b + delta**2 * (count * n_b / total)
    count = total
  if mean is None:
    raise ValueError('no images given')
  return mean, m2 / count, count


def channel_sums(per_pixel_HxWxC: np.ndarray) -> np.ndarray:
  """Sum over the spatial axes (h, w), one value per channel: [C]."""
  return np.asarray(per_pixel_HxWxC, dtype=np.float64).sum(axis=(0, 1))


def channel_variance_sum_difference(var_q_HxWxC: np.ndarray, var_p_HxWxC: np.ndarray) -> np.ndarray:
  """Sigma_{h,w} (var_q - var_p) per channel: the data-side factor of the Section 5 formula."""
  return channel_sums(var_q_HxWxC) - channel_sums(var_p_HxWxC)
