"""The likelihood ratio's mutation rate, tuned on in-distribution data only.

Training and evaluation are replaced by hand-made stand-ins (the real path runs in
the pair end-to-end tests): these check the selection rule, which images it reads,
the record a rerun reuses, and the config checks.
"""

import json
import os

import numpy as np
import pytest

from glow_ood import config_validation
from glow_ood import workdir_config
from glow_ood.experiment import background_tuning
from glow_ood.experiment import model_runs
from glow_ood.experiment import pipeline
from tests.experiments.conftest import tiny_pair_config

MODEL = 'glow'


def test_select_takes_the_highest_auroc_and_the_smaller_rate_on_ties():
  assert background_tuning.select({0.05: 0.71, 0.15: 0.93, 0.3: 0.88}) == 0.15
  assert background_tuning.select({0.3: 0.9, 0.05: 0.9, 0.15: 0.6}) == 0.05
  with pytest.raises(ValueError):
    background_tuning.select({})


def test_the_ratio_that_separates_perturbed_copies_wins():
  rng = np.random.default_rng(0)
  n = 200
  own_clean, own_perturbed = rng.normal(0, 1, n), rng.normal(-10, 1, n)
  # A: the perturbation costs the background 2 nats, the model 10: its ratio rises on
  # the copies. B: it costs the background more than the model: its ratio falls.
  a = background_tuning.ratio_metrics(own_clean, own_perturbed, own_clean + rng.normal(0, 1, n),
                                      own_perturbed + 8, num_resamples=100)
  b = background_tuning.ratio_metrics(own_clean, own_perturbed, own_clean + rng.normal(0, 1, n),
                                      own_perturbed - 2, num_resamples=100)
  assert a['auroc'] > 0.99 and b['auroc'] < 0.1
  assert a['n_in'] == a['n_out'] == n and a['auroc_ci'][0] <= a['auroc'] <= a['auroc_ci'][1]
  assert a['mean_ratio_perturbed'] > a['mean_ratio_clean']
  # The larger rate is B, so the rule is not "smallest" or "largest" by accident.
  assert background_tuning.select({0.3: a['auroc'], 0.5: b['auroc']}) == 0.3
  assert background_tuning.select({0.3: b['auroc'], 0.5: a['auroc']}) == 0.5


def test_perturb_is_seeded_and_replaces_about_the_rate():
  x = np.zeros((50, 16, 16, 1), np.uint8)
  y = background_tuning.perturb(x, 0.1)
  np.testing.assert_array_equal(y, background_tuning.perturb(x, 0.1))
  assert 0.08 < (y != 0).mean() < 0.11   # a uniform draw is 0 itself 1/256 of the time
  with pytest.raises(TypeError):
    background_tuning.perturb(x.astype(np.float32), 0.1)


class _Recorded(dict):
  """A dict of image sets that records which labels were read."""

  def __init__(self, *args):
    super().__init__(*args)
    self.read = []

  def __getitem__(self, label):
    self.read.append(label)
    return super().__getitem__(label)

  def get(self, label, default=None):
    self.read.append(label)
    return super().get(label, default)


# The hand-made scores: the rate of each candidate's background model decides whether its
# ratio rises (0.3) or falls (0.05) with an image's mean brightness, which the uniform
# perturbation raises on these dark images.
_SLOPE = {0.05: -1.0, 0.3: 1.0}


def _fake_log_px(evaluator, model_config, model_workdir, step, images, key):
  del evaluator, model_workdir, step, key
  assert images.dtype == np.uint8 and np.isfinite(images).all()
  brightness = images.reshape(len(images), -1).mean(-1).astype(np.float64)
  own = -5.0 * brightness
  rate = model_config.train.mutation_rate
  return own if rate == 0 else own + _SLOPE[rate] * brightness


def _fake_train(calls):
  def train_model(model_config, model_workdir):
    calls.append((os.path.basename(model_workdir), model_config.train.num_steps,
                  model_config.train.mutation_rate))
    workdir_config.record(model_config, model_workdir)
    return model_config.train.num_steps
  return train_model


def _sets(n=40):
  rng = np.random.default_rng(1)
  nan = np.full((n, 16, 16, 1), np.nan)
  return _Recorded({'train': rng.integers(0, 40, (n, 16, 16, 1)).astype(np.uint8),
                    'test': nan, 'mnist': nan.copy()})


def _fail(*args, **kwargs):
  raise AssertionError('should not run again')


@pytest.fixture
def tuned(tmp_path, monkeypatch):
  config = tiny_pair_config('fashion_mnist_to_mnist')
  assert background_tuning.grid(config) == (0.05, 0.3)
  config.experiment.bootstrap_resamples = 50
  config.background.validation_perturbation = 0.1  # clear separation on the hand-made scores
  calls = []
  monkeypatch.setattr(background_tuning.model_runs, 'train_model', _fake_train(calls))
  monkeypatch.setattr(background_tuning, '_log_px', _fake_log_px)
  workdir = str(tmp_path)
  main_run = {'workdir': os.path.join(workdir, MODEL), 'step': 6, 'evaluator': None}
  images = _sets()
  record = background_tuning.tune(config, MODEL, workdir, main_run, images)
  return config, workdir, main_run, images, record, calls


def test_selection_reads_only_the_train_subset_and_picks_the_separating_rate(tuned):
  config, workdir, _, images, record, calls = tuned
  # The test subset and the OOD set (NaN here) are never read, let alone evaluated.
  assert set(images.read) == {'train'}
  # Each candidate trained to the selection steps in its own workdir.
  assert calls == [('glow_background_mu0.05', 3, 0.05), ('glow_background_mu0.3', 3, 0.3)]
  by_rate = {c['mutation_rate']: c for c in record['candidates']}
  assert by_rate[0.3]['auroc'] > 0.9 > 0.1 > by_rate[0.05]['auroc']
  assert record['chosen'] == 0.3 and not record['decided_by_tie']
  assert by_rate[0.3]['n_in'] == by_rate[0.3]['n_out'] == 40
  assert 'train subset' in record['criterion'] and 'No test image' in record['criterion']
  # The winner was copied to <model>_background, recorded with the full background config.
  recorded = workdir_config.load(os.path.join(workdir, 'glow_background'))
  assert recorded.train.mutation_rate == 0.3
  assert recorded.train.num_steps == config.glow.train.num_steps == 6
  with open(background_tuning.tuning_path(workdir, MODEL)) as f:
    assert json.load(f)['chosen'] == 0.3
  # The background member trains with the chosen rate.
  members = model_runs.member_configs(config, MODEL, background_tuning.chosen_rate(record))
  assert members['glow_background'].train.mutation_rate == 0.3
  lines = '\n'.join(background_tuning.report_lines(
      {'models': {MODEL: {'background_tuning': record}}}))
  assert '| Glow | **0.3** |' in lines and '| Glow | 0.05 |' in lines


def test_a_rerun_reuses_the_recorded_selection(tuned, monkeypatch):
  config, workdir, main_run, _, record, calls = tuned
  monkeypatch.setattr(background_tuning.model_runs, 'train_model', _fail)
  monkeypatch.setattr(background_tuning, '_log_px', _fail)
  again = background_tuning.tune(config, MODEL, workdir, main_run, _sets())
  assert again == json.loads(json.dumps(record))
  # Other settings select again; finished candidates would be reused by train_model.
  config.background.validation_perturbation = 0.05
  monkeypatch.setattr(background_tuning.model_runs, 'train_model', _fake_train(calls))
  monkeypatch.setattr(background_tuning, '_log_px', _fake_log_px)
  other = background_tuning.tune(config, MODEL, workdir, main_run, _sets())
  assert other['settings']['validation_perturbation'] == 0.05 and other['chosen'] == 0.3


def test_a_background_at_another_rate_is_kept_aside(tuned, monkeypatch):
  config, workdir, main_run, _, _, _ = tuned
  dest = os.path.join(workdir, 'glow_background')
  os.remove(workdir_config.config_path(dest))
  workdir_config.record(model_runs.background_config(config, MODEL, 0.15), dest)
  background_tuning.tune(config, MODEL, workdir, main_run, _sets())
  assert workdir_config.load(dest).train.mutation_rate == 0.3
  assert workdir_config.load(dest + '_replaced').train.mutation_rate == 0.15


def test_a_one_value_grid_is_not_tuned(tmp_path, monkeypatch):
  config = tiny_pair_config('fashion_mnist_to_mnist')
  config.background.mutation_rates = (0.15,)
  monkeypatch.setattr(background_tuning.model_runs, 'train_model', _fail)
  images = _sets()
  record = background_tuning.tune(config, MODEL, str(tmp_path), {}, images)
  assert record['chosen'] == 0.15 and not record['tuned'] and not images.read
  assert not os.listdir(tmp_path)
  assert background_tuning.tune(config, 'cv_glow', str(tmp_path), {}, images) is None
  assert model_runs.member_configs(config, MODEL)['glow_background'].train.mutation_rate == 0.15


@pytest.mark.parametrize('key, value, match', [
    ('mutation_rates', (0.05, 'O.15'), r"mutation_rates=\(0\.05, 'O\.15'\): 'O\.15' is not"),
    ('mutation_rates', (0.05, 1.5), r'1\.5 is not a mutation rate'),
    ('mutation_rates', (0.0,), r'0\.0 is not a mutation rate'),
    ('mutation_rates', (), 'non-empty'),
    ('mutation_rates', (0.15, 0.15), 'listed twice'),
    ('selection_steps', -1, r'selection_steps=-1'),
    ('validation_examples', -5, r'validation_examples=-5'),
    ('validation_perturbation', 0.0, r'validation_perturbation=0\.0'),
])
def test_a_bad_tuning_setting_stops_the_run_before_any_training(key, value, match, tmp_path,
                                                                monkeypatch):
  config = tiny_pair_config('fashion_mnist_to_mnist')
  config.background[key] = value
  with pytest.raises(config_validation.ConfigError, match=match):
    pipeline.check_pair_config(config)
  monkeypatch.setattr(pipeline.model_runs, 'train_model', _fail)
  with pytest.raises(config_validation.ConfigError, match=match):
    pipeline.run_pair(config, str(tmp_path / 'run'))
