"""Scoring whole evaluated sets: gather each set's statistics, fit on training, score all.

    stats = {label: set_statistics(eval_arrays, background=..., ensemble=..., code_bits=...)}
    values, fitted = score_sets(scores, stats, fit_label='train')
    metrics = ood_metrics(values, in_label='test', ood_labels=[...])

The fit reads stats[fit_label] and nothing else, so no OOD set can reach a
fitted score; the in-distribution test set is the negative class of every metric.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from glow_ood.analysis import ood_metrics as metrics_lib
from glow_ood.scores import registry

# Arrays of an evaluation file that are not per-image statistics (eval_files.METADATA_KEYS;
# spelt here so the scores do not import the evaluation layer).
_FILE_METADATA = ('step', 'n_bits', 'num_dims', 'dataset', 'split', 'dequantization',
                  'preprocessing', 'subset_indices', 'subset_seed', 'settings')


def set_statistics(eval_arrays: Mapping[str, np.ndarray], *,
                   background: Mapping[str, np.ndarray] | None = None,
                   ensemble: Sequence[Mapping[str, np.ndarray]] = (),
                   code_bits: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """One set's statistics: its evaluation under the model, plus the same images'

  log p(x) under a background model, under every ensemble member (the model
  itself first), and their lossless code lengths {compressor: bits [N]}.
  """
  stats = {k: np.asarray(v) for k, v in eval_arrays.items() if k not in _FILE_METADATA}
  num = len(stats['log_px'])

  def check(name, values):
    values = np.asarray(values)
    if len(values) != num:
      raise ValueError(f'{name} has {len(values)} images, the evaluation {num}: '
                       'both must score the same images in the same order.')
    return values

  if background is not None:
    stats['background_log_px'] = check('The background evaluation', background['log_px'])
  if ensemble:
    members = [stats['log_px']] + [check('An ensemble member\'s evaluation', m['log_px'])
                                   for m in ensemble]
    stats['ensemble_log_px'] = np.stack(members, axis=-1)
  for compressor, bits in (code_bits or {}).items():
    stats[f'code_bits_{compressor}'] = check(f'The {compressor} code lengths', bits)
  return stats


def finite_images(eval_arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  """[N] bool: images whose every per-image statistic is finite (False where the model's
  likelihood overflowed float32). Means over a set are taken over these; the others are
  counted and reported."""
  return ~registry.overflowed({k: v for k, v in eval_arrays.items() if k not in _FILE_METADATA})


def score_sets(scores: Sequence[registry.Score], stats: Mapping[str, Mapping[str, np.ndarray]],
               fit_label: str = 'train'):
  """({label: {score: [N]}}, fitted): scores applicable to the fit set, fitted on it alone."""
  if fit_label not in stats:
    raise ValueError(f'No statistics for the fit set {fit_label!r}; have {sorted(stats)}.')
  chosen = registry.applicable(scores, stats[fit_label])
  fitted = registry.fit_scores(chosen, stats[fit_label])
  values = {label: registry.compute_scores(chosen, fitted, s) for label, s in stats.items()}
  return values, fitted


# Bits/dim negated: higher likelihood = more OOD. A score whose AUROC is no better than
# this row's does no more than flip the likelihood's sign.
REVERSED_LOG_P = 'log p(x) reversed'
REVERSED_DESCRIPTION = ('-bits/dim: higher likelihood = more OOD, the baseline every score '
                        'must beat to do more than flip the sign of log p(x)')


def ood_metrics(values: Mapping[str, Mapping[str, np.ndarray]], in_label: str,
                ood_labels: Sequence[str], *, train_bits_per_dim=None,
                typicality_batch_sizes: Sequence[int] = (),
                num_resamples: int = 1000) -> dict[str, dict]:
  """{ood label: {score: {auroc, auroc_ci, auprc, fpr_at_95_tpr, n_in, n_out}}}, OOD positive.

  Every score's row, then REVERSED_LOG_P (log p(x)'s ranking turned around). With
  training bits/dim given, the batch typicality test (a score of a batch, not of one
  image) is added for each batch size > 1. auroc_ci: 95% bootstrap interval from
  num_resamples resamples of both sets.
  """
  summarize = lambda a, b: metrics_lib.summarize_ood_metrics(a, b, num_resamples=num_resamples)
  metrics = {label: {} for label in ood_labels}
  # One score against every set in turn: the bootstrap's in-distribution half is computed
  # once per score (metrics_lib keeps the last few), not once per set.
  for name, scores_in in values[in_label].items():
    for label in ood_labels:
      if name in values[label]:
        metrics[label][name] = summarize(scores_in, values[label][name])
  for label in ood_labels:
    if 'log p(x)' in metrics[label]:
      metrics[label][REVERSED_LOG_P] = summarize(-values[in_label]['log p(x)'],
                                                 -values[label]['log p(x)'])
  if train_bits_per_dim is not None:
    for b in typicality_batch_sizes:
      for label in ood_labels:
        bpd_in = values[in_label]['log p(x)']
        bpd_out = values[label]['log p(x)']
        if b > 1 and min(len(bpd_in), len(bpd_out)) >= b:
          metrics[label][f'typicality (batch {b})'] = summarize(
              metrics_lib.typicality_scores(train_bits_per_dim, bpd_in, b),
              metrics_lib.typicality_scores(train_bits_per_dim, bpd_out, b))
  return metrics


def best_on_test_set(metrics: Mapping[str, dict]) -> str:
  """The per-image score with the highest AUROC on this very OOD set (batch scores and the
  reversed baseline excluded): a selection on test data, to be labelled as such, never
  the headline (that is the detector declared in the config)."""
  single = {k: v for k, v in metrics.items() if '(batch' not in k and k != REVERSED_LOG_P}
  return max(single, key=lambda k: single[k]['auroc'])
