"""OOD metrics: hand cases and agreement with sklearn (a test-only dependency)."""

import numpy as np
import pytest
from sklearn import metrics as skm

from glow_ood.analysis import ood_metrics


def test_perfect_and_reversed_separation():
  scores_in, scores_out = np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0])
  assert ood_metrics.summarize_ood_metrics(scores_in, scores_out) == {
      'auroc': 1.0, 'auprc': 1.0, 'fpr_at_95_tpr': 0.0, 'n_in': 3, 'n_out': 2,
      'auroc_ci': [1.0, 1.0]}
  reversed_metrics = ood_metrics.summarize_ood_metrics(scores_out, scores_in)
  assert reversed_metrics['auroc'] == 0.0
  assert reversed_metrics['fpr_at_95_tpr'] == 1.0
  # OOD = [0, 1, 2] all below in = [5, 6]: precisions 1/3, 2/4, 3/5 at recall steps of 1/3.
  assert reversed_metrics['auprc'] == pytest.approx((1 / 3 + 1 / 2 + 3 / 5) / 3)


def test_small_case_with_tie_by_hand():
  scores_in, scores_out = [0.0, 1.0, 2.0], [1.0, 3.0]
  # Pairs (out, in): 1 beats 0, ties 1, loses to 2; 3 beats all: (1 + 0.5 + 3) / 6.
  assert ood_metrics.auroc(scores_in, scores_out) == pytest.approx(0.75)
  # Threshold 3: P = 1, recall 1/2; threshold 2: no new OOD; threshold 1: P = 2/4, recall 1.
  assert ood_metrics.average_precision(scores_in, scores_out) == pytest.approx(0.5 + 0.25)
  # TPR 1 is first reached at threshold 1, where in-scores 1 and 2 are flagged.
  assert ood_metrics.fpr_at_tpr(scores_in, scores_out) == pytest.approx(2 / 3)
  assert ood_metrics.fpr_at_tpr(scores_in, scores_out, tpr=0.5) == 0.0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_agrees_with_sklearn_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  scores_in = np.round(rng.normal(0.0, 1.0, size=137), 0)  # rounding makes many ties
  scores_out = np.round(rng.normal(0.7, 1.3, size=91), 0)
  labels = np.r_[np.zeros(137), np.ones(91)]
  scores = np.r_[scores_in, scores_out]
  assert ood_metrics.auroc(scores_in, scores_out) == pytest.approx(skm.roc_auc_score(labels, scores))
  assert ood_metrics.average_precision(scores_in, scores_out) == pytest.approx(
      skm.average_precision_score(labels, scores))
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  expected_fpr = fpr[np.searchsorted(tpr, 0.95, side='left')]
  assert ood_metrics.fpr_at_tpr(scores_in, scores_out, 0.95) == pytest.approx(expected_fpr)


def test_infinite_scores_rank_at_the_ends_and_nan_is_refused():
  inf = np.inf
  # +inf beats every finite score and ties with +inf; -inf loses to all.
  assert ood_metrics.auroc([0.0, 1.0], [inf, 2.0]) == 1.0
  # Pairs (out, in): inf beats 0, ties inf; 2 beats 0, loses to inf.
  assert ood_metrics.auroc([0.0, inf], [inf, 2.0]) == pytest.approx((1 + 0.5 + 1 + 0) / 4)
  assert ood_metrics.auroc([0.0, 1.0], [-inf, 0.5]) == pytest.approx(1 / 4)
  summary = ood_metrics.summarize_ood_metrics([0.0, 1.0, 2.0], [inf, 5.0], num_resamples=50)
  assert summary['auroc'] == 1.0 and summary['auroc_ci'] == [1.0, 1.0]
  assert summary['auprc'] == 1.0 and summary['fpr_at_95_tpr'] == 0.0
  # The bootstrap of a case with ties at +inf agrees with the AUROC of each resample.
  scores_in, scores_out = np.array([0.0, inf, 1.0]), np.array([inf, 2.0, -inf])
  values = ood_metrics.bootstrap_aurocs(scores_in, scores_out, num_resamples=20, seed=3)
  counts_in = ood_metrics.resample_counts(3, 20, 3, 0)
  counts_out = ood_metrics.resample_counts(3, 20, 3, 1)
  for b in range(20):
    expanded_in = np.repeat(scores_in, counts_in[:, b].astype(int))
    expanded_out = np.repeat(scores_out, counts_out[:, b].astype(int))
    assert values[b] == pytest.approx(ood_metrics.auroc(expanded_in, expanded_out))
  with pytest.raises(ValueError, match=r'1 of the 2 OOD scores are NaN.*\+inf and -inf'):
    ood_metrics.auroc([0.0, 1.0], [np.nan, 2.0])


def test_bootstrap_in_side_cache_gives_the_uncached_values():
  # One in-distribution set against many OOD sets (as the stress suites do): the cached
  # sort and cumulative counts give bit-identical AUROCs, keyed by the scores' content.
  rng = np.random.default_rng(0)
  scores_in = rng.normal(size=300)
  outs = [rng.normal(loc, size=n) for loc, n in ((0.5, 120), (1.0, 80), (-0.2, 300))]
  ood_metrics._IN_SIDE_CACHE.clear()
  fresh = []
  for out in outs:
    fresh.append(ood_metrics.bootstrap_aurocs(scores_in, out, num_resamples=200, seed=1))
    ood_metrics._IN_SIDE_CACHE.clear()
  cached = [ood_metrics.bootstrap_aurocs(scores_in, out, num_resamples=200, seed=1)
            for out in outs]
  assert len(ood_metrics._IN_SIDE_CACHE) == 1
  for a, b in zip(fresh, cached):
    np.testing.assert_array_equal(a, b)
  # Scores with the same bytes hit; other scores, seeds or resample counts do not, and the
  # cache stays bounded.
  changed = scores_in.copy()
  changed[7] += 1.0
  ood_metrics.bootstrap_aurocs(changed, outs[0], num_resamples=200, seed=1)
  ood_metrics.bootstrap_aurocs(scores_in, outs[0], num_resamples=200, seed=2)
  ood_metrics.bootstrap_aurocs(scores_in, outs[0], num_resamples=100, seed=1)
  assert len(ood_metrics._IN_SIDE_CACHE) == 4
  for k in range(3):
    ood_metrics.bootstrap_aurocs(scores_in + k + 10, outs[0], num_resamples=50, seed=1)
  assert len(ood_metrics._IN_SIDE_CACHE) == ood_metrics._IN_SIDE_CACHE_SIZE
  # The cached arrays cannot be changed through a result.
  sorted_in, cum_in = next(iter(ood_metrics._IN_SIDE_CACHE.values()))
  assert not sorted_in.flags.writeable and not cum_in.flags.writeable


def test_library_does_not_import_sklearn():
  import inspect
  assert 'sklearn' not in inspect.getsource(ood_metrics)


def test_typicality_scores_by_hand():
  nll_train = [1.0, 2.0, 3.0]  # entropy estimate 2
  nll_test = [2.0, 4.0, 0.0, 2.0, 5.0]
  np.testing.assert_allclose(ood_metrics.typicality_scores(nll_train, nll_test, 2), [1.0, 1.0])
  np.testing.assert_allclose(ood_metrics.typicality_scores(nll_train, nll_test), [0, 2, 2, 0, 3])
  with pytest.raises(ValueError):
    ood_metrics.typicality_scores(nll_train, nll_test, 6)


def test_typicality_bootstrap_threshold():
  assert ood_metrics.typicality_bootstrap_threshold([2.0, 2.0], [2.0] * 10, batch_size=4) == 0.0
  # Batch 1 from N(2, 1) around entropy 2: the 0.99 quantile of |N(0, 1)| is 2.576.
  rng = np.random.default_rng(0)
  threshold = ood_metrics.typicality_bootstrap_threshold(
      [2.0], rng.normal(2.0, 1.0, size=50_000), batch_size=1, num_bootstraps=50_000)
  assert threshold == pytest.approx(2.576, abs=0.1)
  # Batches of 25 shrink the spread by 5.
  threshold_25 = ood_metrics.typicality_bootstrap_threshold(
      [2.0], rng.normal(2.0, 1.0, size=50_000), batch_size=25, num_bootstraps=20_000)
  assert threshold_25 == pytest.approx(2.576 / 5, abs=0.03)


def test_bootstrap_interval_of_perfectly_separated_sets_is_one():
  rng = np.random.default_rng(0)
  assert ood_metrics.auroc_interval(rng.normal(size=50), 10 + rng.normal(size=40)) == (1.0, 1.0)


def test_bootstrap_interval_of_identical_sets_contains_one_half():
  scores = np.random.default_rng(1).normal(size=300)
  low, high = ood_metrics.auroc_interval(scores, scores.copy())
  assert low < 0.5 < high
  assert high - low < 0.12  # about +-1.96 * sqrt((n_in + n_out + 1) / (12 n_in n_out)) = 0.046


def test_bootstrap_resamples_match_a_direct_resampling():
  """Count-weighted AUROCs equal the AUROC of the explicitly resampled sets (ties included)."""
  rng = np.random.default_rng(2)
  scores_in = np.round(rng.normal(0.0, 1.0, size=40), 1)
  scores_out = np.round(rng.normal(0.5, 1.0, size=30), 1)
  values = ood_metrics.bootstrap_aurocs(scores_in, scores_out, num_resamples=5, seed=3)
  # The same draws, replayed: each set's counts come from its own seeded stream.
  replay_in = np.random.default_rng([3, 0, 40]).integers(0, 40, size=(5, 40))
  replay_out = np.random.default_rng([3, 1, 30]).integers(0, 30, size=(5, 30))
  for b in range(5):
    assert values[b] == pytest.approx(
        ood_metrics.auroc(scores_in[replay_in[b]], scores_out[replay_out[b]]))


def test_bootstrap_interval_covers_the_true_auroc_at_about_the_nominal_rate():
  """Two unit Gaussians 1 apart: true AUROC = Phi(1 / sqrt 2) = 0.7602."""
  rng = np.random.default_rng(4)
  covered = 0
  for trial in range(60):
    low, high = ood_metrics.auroc_interval(rng.normal(size=200), rng.normal(1.0, size=200),
                                           num_resamples=400, seed=trial)
    covered += low <= 0.7602 <= high
  assert 50 <= covered <= 60  # 95% nominal: 57 expected, binomial sd 1.7
