"""Each OOD score on cases whose answer is known in closed form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from glow_ood import analysis
from glow_ood import scores as scores_lib
from glow_ood.scores import suite

LATENT_DIMS = (8, 4)
NUM_DIMS = 16


def _stats(rng, n, *, log_px=None, levels=2):
  """Consistent per-image statistics: log p(x) is the sum of its terms."""
  log_pz = rng.normal(-10.0, 2.0, (n, levels))
  coupling = rng.normal(3.0, 1.0, (n, levels))
  actnorm = np.full((n, levels), 1.5)
  invconv = np.full((n, levels), -0.25)
  total = log_pz.sum(-1) + coupling.sum(-1) + actnorm.sum(-1) + invconv.sum(-1)
  if log_px is not None:  # shift one term so the sum is the requested log p(x)
    log_pz[:, 0] += log_px - total
    total = log_px
  return {'log_px': total, 'bits_per_dim': -total / (NUM_DIMS * math.log(2)),
          'log_pz': log_pz, 'logdet_actnorm': actnorm, 'logdet_invconv': invconv,
          'logdet_coupling': coupling}


def _by_name(names):
  every = {s.name: s for s in scores_lib.default_scores(LATENT_DIMS, NUM_DIMS)}
  return [every[n] for n in names]


def test_likelihood_ratio_of_two_gaussians_is_the_closed_form_log_ratio():
  # Model N(0, 1), background N(0, 2^2): the score is log N(x; 0, 4) - log N(x; 0, 1).
  x = np.linspace(-4.0, 4.0, 41)
  stats = {'log_px': scipy_stats.norm(0, 1).logpdf(x),
           'background_log_px': scipy_stats.norm(0, 2).logpdf(x)}
  score, = _by_name(['likelihood ratio'])
  values = scores_lib.compute_scores([score], {score.name: None}, stats)[score.name]
  expected = -math.log(2.0) + 0.5 * x**2 * (1 - 1 / 4)
  np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
  # Far-out points are flagged OOD, the mode is the most in-distribution point.
  assert values.argmin() == 20 and values[0] == values.max()


def test_typicality_is_distance_to_the_training_mean():
  rng = np.random.default_rng(0)
  train = _stats(rng, 50)
  score, = _by_name(['typicality'])
  fitted = scores_lib.fit_scores([score], train)
  entropy = train['bits_per_dim'].mean()
  test = {'bits_per_dim': np.array([entropy, entropy + 0.3, entropy - 0.5])}
  np.testing.assert_allclose(
      scores_lib.compute_scores([score], fitted, test)[score.name], [0.0, 0.3, 0.5], atol=1e-5)
  # Batch 1 agrees with the batch-level typicality of the metrics module.
  np.testing.assert_allclose(
      analysis.typicality_scores(train['bits_per_dim'], test['bits_per_dim'], 1),
      [0.0, 0.3, 0.5], atol=1e-12)


def test_input_complexity_subtracts_the_code_length_per_dimension():
  score, = _by_name(['input complexity (PNG)'])
  stats = {'bits_per_dim': np.array([2.0, 5.0]), 'code_bits_png': np.array([16.0, 64.0])}
  values = scores_lib.compute_scores([score], {score.name: None}, stats)[score.name]
  np.testing.assert_allclose(values, [2.0 - 1.0, 5.0 - 4.0])
  assert not score.differentiable


def test_level_scores_and_level_ratio_by_hand():
  stats = {'log_pz': np.array([[-8.0, -4.0], [-16.0, -2.0]])}
  names = ['log p(z_0)', 'log p(z_1)', 'level ratio']
  values = scores_lib.compute_scores(_by_name(names), dict.fromkeys(names), stats)
  np.testing.assert_allclose(values['log p(z_0)'], [8.0, 16.0])
  np.testing.assert_allclose(values['log p(z_1)'], [4.0, 2.0])
  # log p(z_0)/8 - log p(z_1)/4
  np.testing.assert_allclose(values['level ratio'], [-1.0 + 1.0, -2.0 + 0.5])


def test_waic_of_identical_models_is_minus_the_log_likelihood():
  log_px = np.array([-3.0, -1.0, -7.5])
  stats = {'ensemble_log_px': np.repeat(log_px[:, None], 5, axis=1)}
  score, = _by_name(['WAIC'])
  values = scores_lib.compute_scores([score], {score.name: None}, stats)[score.name]
  np.testing.assert_allclose(values, -log_px)
  # Disagreement between members raises the score by the variance.
  stats = {'ensemble_log_px': np.array([[-1.0, -3.0]])}
  np.testing.assert_allclose(
      scores_lib.compute_scores([score], {score.name: None}, stats)[score.name], [2.0 + 1.0])


def test_joint_gaussian_fit_recovers_a_known_density():
  rng = np.random.default_rng(1)
  mean = np.array([1.0, -2.0, 0.5])
  a = rng.normal(size=(3, 3))
  cov = a @ a.T + 0.5 * np.eye(3)
  train = rng.multivariate_normal(mean, cov, size=20_000)
  gaussian = scores_lib.fit_gaussian(train, ridge=0.0)
  test = rng.multivariate_normal(mean, cov, size=200)
  fitted = np.asarray(gaussian.log_density(jnp.asarray(test, jnp.float32)))
  # The fit is a density of standardised features: add back the log Jacobian.
  jacobian = -np.log(np.asarray(gaussian.standardize.std)).sum()
  # Exactly the maximum-likelihood Gaussian of the sample ...
  mle = scipy_stats.multivariate_normal(train.mean(0), np.cov(train, rowvar=False, bias=False))
  np.testing.assert_allclose(fitted + jacobian, mle.logpdf(test), atol=2e-3)
  # ... which is close to the law the sample came from.
  truth = scipy_stats.multivariate_normal(mean, cov).logpdf(test)
  assert np.abs(fitted + jacobian - truth).mean() < 0.05


def test_product_kde_matches_the_smoothed_density_of_a_known_law():
  rng = np.random.default_rng(2)
  train = rng.normal(0.0, 1.0, size=(20_000, 2))
  kde = scores_lib.fit_product_kde(train)
  h = kde.bandwidth
  points = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, 0.5]])
  fitted = np.asarray(kde.log_density(jnp.asarray(points, jnp.float32)))
  jacobian = -np.log(np.asarray(kde.standardize.std)).sum()
  # A Gaussian KDE of N(0, 1) data is N(0, 1 + h^2) in expectation, per feature.
  truth = scipy_stats.norm(0, math.sqrt(1 + h**2)).logpdf(points).sum(-1)
  np.testing.assert_allclose(fitted + jacobian, truth, atol=0.03)


def test_dose_drops_constant_terms_and_flags_atypical_statistics():
  rng = np.random.default_rng(3)
  train = _stats(rng, 500)
  names = ['DoSE (KDE)', 'DoSE (Gaussian)']
  chosen = _by_name(names)
  fitted = scores_lib.fit_scores(chosen, train)
  # ActNorm and 1x1-conv log-dets are constant: not among the features used.
  features = scores_lib.dose_features(train)
  assert features.shape == (500, 1 + 2 + 3 * 2)
  kept = fitted['DoSE (KDE)'].standardize.keep
  assert kept == (0, 1, 2, 7, 8)
  typical = _stats(rng, 200)
  # Same log p(x) distribution but log p(z) and log-det moved apart in opposite directions.
  odd = _stats(rng, 200)
  odd['log_pz'][:, 1] -= 8.0
  odd['logdet_coupling'][:, 1] += 8.0
  for name in names:
    s_typ = scores_lib.compute_scores(_by_name([name]), fitted, typical)[name]
    s_odd = scores_lib.compute_scores(_by_name([name]), fitted, odd)[name]
    assert analysis.auroc(s_typ, s_odd) > 0.99, name


def test_fits_use_only_what_they_are_given():
  """A fitted score is a function of the training statistics alone."""
  rng = np.random.default_rng(4)
  train = _stats(rng, 300)
  chosen = _by_name(['typicality', 'DoSE (KDE)', 'DoSE (Gaussian)', 'combined',
                     'level ratio (two-sided)'])
  a = scores_lib.fit_scores(chosen, train)
  b = scores_lib.fit_scores(chosen, {k: np.copy(v) for k, v in train.items()})
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _fitted_defaults(seed, num_test):
  """Every default score fitted on 100 training images, and num_test test images."""
  rng = np.random.default_rng(seed)
  train, test = _stats(rng, 100), _stats(rng, num_test)
  every = scores_lib.default_scores(LATENT_DIMS, NUM_DIMS)
  return every, scores_lib.fit_scores(scores_lib.applicable(every, train), train), test


def test_compute_scores_skips_scores_whose_statistics_are_missing_and_chunks():
  every, fitted, test = _fitted_defaults(5, 37)
  whole = scores_lib.compute_scores(every, fitted, test)
  chunked = scores_lib.compute_scores(every, fitted, test, chunk=8)
  assert 'likelihood ratio' not in whole and 'WAIC' not in whole
  assert 'input complexity (PNG)' not in whole
  assert set(whole) == {'log p(x)', 'typicality', 'log p(z_0)', 'log p(z_1)', 'level ratio',
                        'level ratio (two-sided)', 'DoSE (KDE)', 'DoSE (Gaussian)', 'combined'}
  for name in whole:
    assert whole[name].shape == (37,)
    np.testing.assert_allclose(whole[name], chunked[name], rtol=1e-6)


def _overflow(stats, rows, level=0):
  """The given images' log p(z_level) overflowed float32: -inf, and log p(x) with it."""
  stats = {k: np.array(v, np.float64) for k, v in stats.items()}
  stats['log_pz'][rows, level] = -np.inf
  stats['log_px'][rows] = -np.inf
  stats['bits_per_dim'][rows] = np.inf
  return stats


def test_an_overflowed_image_ranks_as_most_ood_where_a_score_is_undefined():
  every, fitted, test = _fitted_defaults(7, 20)
  clean = scores_lib.compute_scores(every, fitted, test)
  broken = _overflow(test, [3])
  both = _overflow(broken, [5], level=1)   # both levels: the level ratio is inf - inf
  both = _overflow(both, [5], level=0)
  values = scores_lib.compute_scores(every, fitted, both)
  assert scores_lib.overflowed(both).tolist() == [i in (3, 5) for i in range(20)]
  for name, v in values.items():
    assert not np.isnan(v).any(), name
    # Every other image keeps its score exactly.
    np.testing.assert_array_equal(np.delete(v, [3, 5]), np.delete(clean[name], [3, 5]))
  # -log p(x) is +inf by its arithmetic; so is each density's -log of a point at infinity.
  for name in ('log p(x)', 'typicality', 'DoSE (KDE)', 'DoSE (Gaussian)', 'combined',
               'level ratio (two-sided)'):
    assert values[name][3] == values[name][5] == np.inf, name
  # The one-sided level ratio keeps its own verdict: a finest level at -inf is "typical"
  # (its blind spot); undefined (both levels at -inf) it ranks the image +inf.
  assert values['level ratio'][3] == -np.inf and values['level ratio'][5] == np.inf
  assert values['log p(z_1)'][3] == clean['log p(z_1)'][3]


def test_nan_from_finite_statistics_and_overflowed_training_images_are_refused():
  rng = np.random.default_rng(8)
  train, test = _stats(rng, 50), _stats(rng, 10)
  broken_score = scores_lib.Score(
      name='broken', description='', reference='', needs='', requires=('log_px',),
      fn=lambda stats, _: jnp.sqrt(jnp.asarray(stats['log_px'])))  # NaN for log p < 0
  with pytest.raises(FloatingPointError, match=r"'broken' is NaN on 10 images whose "
                                               'statistics are all finite'):
    scores_lib.compute_scores([broken_score], {'broken': None}, test)
  with pytest.raises(FloatingPointError, match=r'2 of the 50 training images .* not finite'):
    scores_lib.fit_scores(_by_name(['DoSE (Gaussian)']), _overflow(train, [0, 7]))


def test_scores_are_differentiable_in_the_statistics():
  rng = np.random.default_rng(6)
  train = _stats(rng, 200)
  chosen = [s for s in scores_lib.default_scores(LATENT_DIMS, NUM_DIMS) if s.differentiable]
  chosen = scores_lib.applicable(chosen, train)
  fitted = scores_lib.fit_scores(chosen, train)
  test = {k: jnp.asarray(v[:4], jnp.float32) for k, v in _stats(rng, 4).items()}
  for s in chosen:
    grad = jax.grad(lambda t, s=s: s.fn(t, fitted[s.name]).sum())(test)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad)), s.name


@pytest.mark.parametrize('rate', [0.0, 0.15, 1.0])
def test_mutation_replaces_the_stated_fraction_with_uniform_values(rate):
  x = jnp.full((64, 32, 32, 1), 7, jnp.uint8)
  y = np.asarray(scores_lib.mutate_pixels(jax.random.key(0), x, rate))
  assert y.dtype == np.uint8 and y.shape == x.shape
  # A replaced value equals 7 with probability 1/256: count those in the expected fraction.
  changed = (y != 7).mean()
  expected = rate * 255 / 256
  n = y.size
  assert abs(changed - expected) <= 4 * math.sqrt(max(expected * (1 - expected), 1e-12) / n) + 1e-12
  if rate == 1.0:
    counts = np.bincount(y.reshape(-1), minlength=256)
    # Uniform over 0..255: a chi-square test at a generous level.
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert chi2 < scipy_stats.chi2(255).ppf(0.999)


def test_mutation_keeps_unreplaced_pixels_and_rejects_bad_input():
  x = jnp.asarray(np.random.default_rng(7).integers(0, 256, (8, 16, 16, 3)), jnp.uint8)
  y = np.asarray(scores_lib.mutate_pixels(jax.random.key(1), x, 0.0))
  np.testing.assert_array_equal(y, np.asarray(x))
  with pytest.raises(TypeError, match='uint8'):
    scores_lib.mutate_pixels(jax.random.key(1), x.astype(jnp.float32), 0.1)
  with pytest.raises(ValueError, match='mutation rate'):
    scores_lib.mutate_pixels(jax.random.key(1), x, 1.5)


def test_score_sets_fit_on_the_fit_set_alone():
  """Swapping the OOD set leaves every fitted score, and the test set's scores, unchanged."""
  rng = np.random.default_rng(8)
  train, test = _stats(rng, 200), _stats(rng, 50)
  ood_a = _stats(rng, 60, log_px=np.full(60, -5.0))
  ood_b = _stats(rng, 70, log_px=np.full(70, -50.0))
  every = scores_lib.default_scores(LATENT_DIMS, NUM_DIMS)
  values_a, fitted_a = suite.score_sets(every, {'train': train, 'test': test, 'ood': ood_a})
  values_b, fitted_b = suite.score_sets(every, {'train': train, 'test': test, 'ood': ood_b})
  for x, y in zip(jax.tree.leaves(fitted_a), jax.tree.leaves(fitted_b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for name in values_a['test']:
    np.testing.assert_array_equal(values_a['test'][name], values_b['test'][name])
  assert not np.array_equal(values_a['ood']['log p(x)'][:60], values_b['ood']['log p(x)'][:60])
  with pytest.raises(ValueError, match='fit set'):
    suite.score_sets(every, {'test': test}, fit_label='train')


def test_set_statistics_joins_models_and_checks_lengths():
  rng = np.random.default_rng(9)
  own, background = _stats(rng, 5), _stats(rng, 5)
  members = [_stats(rng, 5), _stats(rng, 5)]
  stats = suite.set_statistics(own, background=background, ensemble=members,
                               code_bits={'png': np.arange(5.0)})
  np.testing.assert_array_equal(stats['background_log_px'], background['log_px'])
  assert stats['ensemble_log_px'].shape == (5, 3)
  np.testing.assert_array_equal(stats['ensemble_log_px'][:, 0], own['log_px'])
  np.testing.assert_array_equal(stats['code_bits_png'], np.arange(5.0))
  with pytest.raises(ValueError, match='same images'):
    suite.set_statistics(own, background=_stats(rng, 4))


def test_ood_metrics_per_set_and_batch_typicality():
  values = {'test': {'log p(x)': np.array([1.0, 2.0, 3.0, 4.0])},
            'ood': {'log p(x)': np.array([5.0, 6.0, 7.0, 8.0])}}
  metrics = suite.ood_metrics(values, 'test', ['ood'], train_bits_per_dim=np.array([2.5]),
                              typicality_batch_sizes=(1, 2))
  assert metrics['ood']['log p(x)']['auroc'] == 1.0
  # Batches of 2: test means 1.5, 3.5 -> |.-2.5| = 1, 1; OOD means 5.5, 7.5 -> 3, 5.
  assert metrics['ood']['typicality (batch 2)']['auroc'] == 1.0
  assert 'typicality (batch 1)' not in metrics['ood']
  # The reversed baseline ranks by likelihood, the other way round; never the "best" pick.
  assert metrics['ood'][suite.REVERSED_LOG_P]['auroc'] == 0.0
  assert suite.best_on_test_set(metrics['ood']) == 'log p(x)'
  assert metrics['ood']['log p(x)']['auroc_ci'] == [1.0, 1.0]
  assert (metrics['ood']['log p(x)']['n_in'], metrics['ood']['log p(x)']['n_out']) == (4, 4)


def test_dose_models_a_vaes_terms_and_is_absent_without_terms():
  rng = np.random.default_rng(5)

  def vae_stats(n, kl_shift=0.0):
    recon = rng.normal(-800.0, 10.0, n)
    kl = rng.normal(30.0, 2.0, n) + kl_shift
    return {'log_px': recon - kl + 2.0, 'bits_per_dim': rng.normal(3.0, 0.1, n),
            'log_px_given_z': recon, 'kl': kl}

  every = {s.name: s for s in scores_lib.default_scores([], 256, (), ('log_px_given_z', 'kl'))}
  chosen = [every['DoSE (KDE)'], every['DoSE (Gaussian)']]
  train = vae_stats(400)
  assert scores_lib.dose_features(train, ('log_px_given_z', 'kl')).shape == (400, 3)
  fitted = scores_lib.fit_scores(chosen, train)
  typical, odd = vae_stats(200), vae_stats(200, kl_shift=12.0)  # an atypical KL alone
  for score in chosen:
    auroc = analysis.auroc(np.asarray(score.fn(typical, fitted[score.name])),
                           np.asarray(score.fn(odd, fitted[score.name])))
    assert auroc > 0.95, (score.name, auroc)
  # A model reporting log p(x) alone (PixelCNN++) gets no DoSE.
  names = {s.name for s in scores_lib.default_scores([], 256, (), ())}
  assert not any(n.startswith('DoSE') for n in names)


def _with_code_bits(rng, stats, shift=0.0):
  """PNG code lengths correlated with bits/dim, as a compressor's are with a model's."""
  n = len(stats['bits_per_dim'])
  return dict(stats, code_bits_png=NUM_DIMS * (stats['bits_per_dim'] + shift
                                               + rng.normal(0.0, 0.05, n)))


def test_combined_detector_is_two_sided_on_hand_made_statistics():
  """Images too likely and too unlikely are both flagged; typical ones are not."""
  rng = np.random.default_rng(11)
  train = _with_code_bits(rng, _stats(rng, 500))
  score, = _by_name(['combined'])
  fitted = scores_lib.fit_scores([score], train)
  assert fitted['combined'].names == ('bits/dim', 'bits/dim - png code/dim', 'level ratio')
  mean_log_px = train['log_px'].mean()
  spread = train['log_px'].std()
  typical = _with_code_bits(rng, _stats(rng, 200))
  too_likely = _with_code_bits(rng, _stats(rng, 200, log_px=np.full(200, mean_log_px + 6 * spread)))
  too_unlikely = _with_code_bits(rng, _stats(rng, 200, log_px=np.full(200, mean_log_px - 6 * spread)))
  values = {name: np.asarray(score.fn(s, fitted['combined'])) for name, s in
            [('typical', typical), ('likely', too_likely), ('unlikely', too_unlikely)]}
  assert analysis.auroc(values['typical'], values['likely']) > 0.99
  assert analysis.auroc(values['typical'], values['unlikely']) > 0.99
  # log p(x) alone (bits/dim) gets one side right and the other wrong: the point of the test.
  bpd = lambda s: s['bits_per_dim']
  assert analysis.auroc(bpd(typical), bpd(too_likely)) < 0.01
  # Ordinary likelihood with an atypical code length (simple image, ordinary bits/dim) is
  # flagged through the joint term, as input complexity would flag it.
  odd_code = _with_code_bits(rng, _stats(rng, 200), shift=-1.0)
  assert analysis.auroc(values['typical'],
                        np.asarray(score.fn(odd_code, fitted['combined']))) > 0.99


def test_combined_detector_applies_to_a_model_with_log_p_alone():
  rng = np.random.default_rng(12)
  every = {s.name: s for s in scores_lib.default_scores([], NUM_DIMS, ('png',), ())}
  score = every['combined']
  train = _with_code_bits(rng, {'bits_per_dim': rng.normal(3.0, 0.2, 300)})
  fitted = scores_lib.fit_scores([score], train)
  assert fitted['combined'].names == ('bits/dim', 'bits/dim - png code/dim')
  low = _with_code_bits(rng, {'bits_per_dim': rng.normal(1.5, 0.2, 100)})
  high = _with_code_bits(rng, {'bits_per_dim': rng.normal(4.5, 0.2, 100)})
  typical = _with_code_bits(rng, {'bits_per_dim': rng.normal(3.0, 0.2, 100)})
  base = np.asarray(score.fn(typical, fitted['combined']))
  for other in (low, high):
    assert analysis.auroc(base, np.asarray(score.fn(other, fitted['combined']))) > 0.99


def test_level_ratio_one_sided_and_its_two_sided_form():
  """The one-sided ratio misses a finest level that is too unlikely; the two-sided one not."""
  rng = np.random.default_rng(13)
  train = _stats(rng, 400)
  one, two = _by_name(['level ratio', 'level ratio (two-sided)'])
  fitted = scores_lib.fit_scores([one, two], train)

  def shifted(delta):
    s = _stats(rng, 200)
    s['log_pz'][:, 0] += delta * LATENT_DIMS[0]  # finest level's per-dim term moved by delta
    return s

  typical, finer_likely, finer_unlikely = _stats(rng, 200), shifted(+3.0), shifted(-3.0)
  values = lambda score, s: np.asarray(score.fn(s, fitted[score.name]))
  assert analysis.auroc(values(one, typical), values(one, finer_likely)) > 0.99
  assert analysis.auroc(values(one, typical), values(one, finer_unlikely)) < 0.01  # blind
  for s in (finer_likely, finer_unlikely):
    assert analysis.auroc(values(two, typical), values(two, s)) > 0.99


def test_combined_detector_models_a_vaes_terms_and_needs_the_same_statistics():
  rng = np.random.default_rng(14)
  every = {s.name: s for s in scores_lib.default_scores([], 256, (), ('log_px_given_z', 'kl'))}
  score = every['combined']

  def vae_stats(n, kl_shift=0.0):
    recon = rng.normal(-800.0, 10.0, n)
    kl = rng.normal(30.0, 2.0, n) + kl_shift
    return {'log_px': recon - kl, 'bits_per_dim': rng.normal(3.0, 0.1, n),
            'log_px_given_z': recon, 'kl': kl}

  fitted = scores_lib.fit_scores([score], vae_stats(400))
  assert fitted['combined'].names == ('bits/dim', 'log_px_given_z/dim', 'kl/dim')
  typical, odd = vae_stats(200), vae_stats(200, kl_shift=12.0)  # an atypical KL alone
  assert analysis.auroc(np.asarray(score.fn(typical, fitted['combined'])),
                        np.asarray(score.fn(odd, fitted['combined']))) > 0.95
  with pytest.raises(KeyError, match='missing now'):
    score.fn({'bits_per_dim': typical['bits_per_dim']}, fitted['combined'])
