"""OOD detection metrics and the typicality test, in numpy.

Conventions: out-of-distribution examples are the positive class, and a
higher score means "more OOD". Pass -log p(x), bits/dim or a typicality score;
passing log p(x) itself gives 1 - AUROC. Every metric takes the scores of the
in-distribution set and of the OOD set separately. A score may be +inf or -inf
(a likelihood that overflowed float32 is infinitely unlikely): it ranks above
or below every finite score, ties with its equals. NaN orders nothing and is
refused.
"""

from __future__ import annotations

import collections
import functools
import hashlib

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks; tied values share the mean of the ranks they occupy."""
  order = np.argsort(values, kind='mergesort')
  sorted_values = values[order]
  # Start index of each run of equal values, and the run lengths.
  run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  run_lengths = np.diff(np.r_[run_starts, values.size])
  run_mean_rank = run_starts + (run_lengths + 1) / 2.0
  ranks = np.empty(values.size, dtype=np.float64)
  ranks[order] = np.repeat(run_mean_rank, run_lengths)
  return ranks


def _check_scores(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
  scores_in = np.asarray(scores_in, dtype=np.float64).reshape(-1)
  scores_out = np.asarray(scores_out, dtype=np.float64).reshape(-1)
  if scores_in.size == 0 or scores_out.size == 0:
    raise ValueError('both score sets must be non-empty')
  undefined = [f'{int(np.isnan(s).sum())} of the {s.size} {side} scores'
               for side, s in (('in-distribution', scores_in), ('OOD', scores_out))
               if np.isnan(s).any()]
  if undefined:
    raise ValueError(f'{" and ".join(undefined)} are NaN: a score must order every image '
                     '(+inf and -inf are allowed; glow_ood.scores.registry.compute_scores '
                     'turns an undefined score of an overflowed image into +inf).')
  return scores_in, scores_out


def _curve_points(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
  """True and false positive counts at each distinct threshold, highest first.

  An example is flagged OOD when its score >= threshold, so tied examples
  always enter together.
  """
  scores = np.r_[scores_in, scores_out]
  is_out = np.r_[np.zeros(scores_in.size), np.ones(scores_out.size)]
  order = np.argsort(-scores, kind='mergesort')
  scores, is_out = scores[order], is_out[order]
  last_of_run = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
  true_pos = np.cumsum(is_out)[last_of_run]
  false_pos = (last_of_run + 1) - true_pos
  return true_pos, false_pos


def auroc(scores_in, scores_out) -> float:
  """P(score_out > score_in) + 1/2 P(tie), via the Mann-Whitney U statistic."""
  scores_in, scores_out = _check_scores(scores_in, scores_out)
  ranks = _average_ranks(np.r_[scores_in, scores_out])
  n_in, n_out = scores_in.size, scores_out.size
  u_out = ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0
  return float(u_out / (n_in * n_out))


def average_precision(scores_in, scores_out) -> float:
  """AUPRC as average precision: sum over thresholds of (recall step) x precision.

  Ties are one threshold (all tied examples enter at once), the step-wise
  definition without interpolation.
  """
  scores_in, scores_out = _check_scores(scores_in, scores_out)
  true_pos, false_pos = _curve_points(scores_in, scores_out)
  precision = true_pos / (true_pos + false_pos)
  recall_steps = np.diff(np.r_[0.0, true_pos]) / scores_out.size
  return float(np.sum(recall_steps * precision))


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
  """FPR at the highest threshold whose TPR reaches `tpr` (ties enter together)."""
  scores_in, scores_out = _check_scores(scores_in, scores_out)
  true_pos, false_pos = _curve_points(scores_in, scores_out)
  reached = np.flatnonzero(true_pos / scores_out.size >= tpr)
  return float(false_pos[reached[0]] / scores_in.size)


def bootstrap_aurocs(scores_in, scores_out, *, num_resamples: int = 1000,
                     seed: int = 0) -> np.ndarray:
  """[num_resamples] AUROCs of resamples drawn with replacement from each set independently.

  A resample is a vector of counts (how often each image was drawn), so the
  AUROC of resample b is sum_j c_out[j, b] * (in-weight below s_j + half the
  in-weight tied with s_j) / (n_in * n_out): one sort, then weighted cumulative
  sums, O(B * (n_in + n_out)) instead of B sorts. The counts depend only on the
  set sizes and the seed, so every score compared on the same two sets sees the
  same resamples (and they are computed once).

  Laid out [images, resamples], every step (row gathers, the cumulative sum down
  the images, the weighted sum) runs along contiguous rows of all B resamples
  together: 3-4x faster than [resamples, images] at 2,000 x 5,000 images. The
  arithmetic is exact: the cumulative counts are integers up to n_in (float32
  holds them exactly below 2**24) and the weighted sum is taken in float64.
  """
  scores_in, scores_out = _check_scores(scores_in, scores_out)
  if num_resamples < 1:
    raise ValueError(f'num_resamples must be positive, got {num_resamples}')
  n_in, n_out = scores_in.size, scores_out.size
  sorted_in, cum_in = _in_side(scores_in, num_resamples, seed)
  below = np.searchsorted(sorted_in, scores_out, side='left')
  upto = np.searchsorted(sorted_in, scores_out, side='right')
  counts_out = resample_counts(n_out, num_resamples, seed, _OUT_STREAM)
  # Twice (weight below + half the tied weight) = weight below + weight up to s_j.
  twice = cum_in[below]
  if np.array_equal(below, upto):  # no out-score ties an in-score
    twice *= 2
  else:
    twice += cum_in[upto]
  return np.einsum('jb,jb->b', counts_out, twice, dtype=np.float64) / (2.0 * n_in * n_out)


_IN_STREAM, _OUT_STREAM = 0, 1
# The in-distribution side of the last few bootstrap_aurocs calls, by content.
_IN_SIDE_CACHE: collections.OrderedDict = collections.OrderedDict()
_IN_SIDE_CACHE_SIZE = 4


def _in_side(scores_in: np.ndarray, num_resamples: int, seed: int):
  """(sorted in-scores, [n_in + 1, num_resamples] cumulative resample counts of the k
  lowest), read-only: the half of bootstrap_aurocs that depends on the in-distribution
  scores alone. Kept for the last few sets of scores seen, so one score compared with many
  OOD sets (the stress and corruption suites) sorts and sums its side once."""
  key = (hashlib.sha1(scores_in.tobytes()).digest(), scores_in.size, num_resamples, seed)
  if key in _IN_SIDE_CACHE:
    _IN_SIDE_CACHE.move_to_end(key)
    return _IN_SIDE_CACHE[key]
  n_in = scores_in.size
  order = np.argsort(scores_in, kind='mergesort')
  sorted_in = scores_in[order]
  counts_in = resample_counts(n_in, num_resamples, seed, _IN_STREAM)[order]
  exact = np.float32 if n_in < 2**24 else np.float64
  cum_in = np.zeros((n_in + 1, num_resamples), exact)  # row k: in-weight of the k lowest
  np.cumsum(counts_in, axis=0, dtype=exact, out=cum_in[1:])
  sorted_in.flags.writeable = False
  cum_in.flags.writeable = False
  _IN_SIDE_CACHE[key] = (sorted_in, cum_in)
  while len(_IN_SIDE_CACHE) > _IN_SIDE_CACHE_SIZE:
    _IN_SIDE_CACHE.popitem(last=False)
  return sorted_in, cum_in


@functools.lru_cache(maxsize=8)
def resample_counts(n: int, num: int, seed: int, stream: int) -> np.ndarray:
  """[n, num] counts (read-only, float32): column b says how often each of n items was drawn
  in n draws with replacement, from np.random.default_rng([seed, stream, n])."""
  rng = np.random.default_rng([seed, stream, n])
  draws = rng.integers(0, n, size=(num, n)) + (np.arange(num) * n)[:, None]
  counts = np.bincount(draws.reshape(-1), minlength=num * n).reshape(num, n)
  counts = np.ascontiguousarray(counts.T, dtype=np.float32)
  counts.flags.writeable = False
  return counts


def auroc_interval(scores_in, scores_out, *, num_resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of the AUROC, both sets resampled independently."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}')
  values = bootstrap_aurocs(scores_in, scores_out, num_resamples=num_resamples, seed=seed)
  tail = (1.0 - confidence) / 2.0
  low, high = np.quantile(values, [tail, 1.0 - tail])
  return float(low), float(high)


def summarize_ood_metrics(scores_in, scores_out, *, num_resamples: int = 1000,
                          seed: int = 0) -> dict:
  """AUROC with its 95% bootstrap interval, AUPRC, FPR at 95% TPR and the set sizes.

  OOD positive, higher score = more OOD. 'auroc_ci' is [low, high];
  num_resamples=0 leaves it out.
  """
  scores_in, scores_out = _check_scores(scores_in, scores_out)
  summary = {
      'auroc': auroc(scores_in, scores_out),
      'auprc': average_precision(scores_in, scores_out),
      'fpr_at_95_tpr': fpr_at_tpr(scores_in, scores_out, 0.95),
      'n_in': int(scores_in.size),
      'n_out': int(scores_out.size),
  }
  if num_resamples:
    summary['auroc_ci'] = list(auroc_interval(scores_in, scores_out,
                                              num_resamples=num_resamples, seed=seed))
  return summary


# -----------------------------------------------------------------------------
# Typicality test (Nalisnick et al. 2019b): a batch is atypical when its mean
# NLL is far from the model's entropy, estimated by the mean training NLL.


def typicality_scores(nll_in_train, nll_test, batch_size: int = 1) -> np.ndarray:
  """|mean NLL of each batch of `batch_size` consecutive test examples - entropy estimate|.

  batch_size=1 is the per-example variant. A remainder smaller than a batch is
  dropped. Units are whatever the NLLs are in (nats or bits/dim); higher
  means more OOD, so the result feeds the metrics above directly.
  """
  if batch_size < 1:
    raise ValueError('batch_size must be positive')
  entropy = np.mean(np.asarray(nll_in_train, dtype=np.float64))
  nll_test = np.asarray(nll_test, dtype=np.float64).reshape(-1)
  num_batches = nll_test.size // batch_size
  if num_batches == 0:
    raise ValueError(f'{nll_test.size} test examples cannot fill a batch of {batch_size}')
  batch_means = nll_test[: num_batches * batch_size].reshape(num_batches, batch_size).mean(axis=1)
  return np.abs(batch_means - entropy)


def typicality_bootstrap_threshold(
    nll_in_train,
    nll_in_validation,
    batch_size: int,
    num_bootstraps: int = 1000,
    quantile: float = 0.99,
    seed: int = 0,
) -> float:
  """Threshold on typicality scores: a quantile of the scores of bootstrap batches.

  The entropy is estimated from `nll_in_train`; batches are resampled with
  replacement from held-out in-distribution NLLs (`nll_in_validation`), so a
  batch scoring above the threshold is flagged OOD at a false-alarm rate of
  about 1 - quantile.
  """
  rng = np.random.default_rng(seed)
  nll_in_validation = np.asarray(nll_in_validation, dtype=np.float64).reshape(-1)
  resampled = rng.choice(nll_in_validation, size=num_bootstraps * batch_size, replace=True)
  scores = typicality_scores(nll_in_train, resampled, batch_size)
  return float(np.quantile(scores, quantile))
