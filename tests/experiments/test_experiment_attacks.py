"""The attack section on the tiny FashionMNIST -> MNIST model, and the attack command."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import eval_sets
from glow_ood import evaluate
from glow_ood import train
from glow_ood.configs.pairs import pair_base
from glow_ood.experiment import attack_command
from glow_ood.experiment import attack_section
from glow_ood.experiment import eval_plan
from tests.experiments.conftest import REPO_ROOT
from tests.experiments.conftest import tiny_pair_config


@pytest.fixture(scope='module')
def trained(offline_data, tmp_path_factory):
  """The tiny pair's Glow, trained for its few steps, with its test and OOD images."""
  config = tiny_pair_config('fashion_mnist_to_mnist')
  config.glow.data.path = offline_data['fashion_idx']
  config.experiment.ood.mnist.data.path = offline_data['mnist_npz']
  model_config = config.glow
  workdir = str(tmp_path_factory.mktemp('attack_glow'))
  train.train_and_evaluate(model_config, workdir)
  sets = eval_plan.eval_sets(config, 'glow')
  images = {s.label: eval_plan.load_images(s) for s in sets}
  return model_config, workdir, images


def test_attack_section_table_figure_and_markdown(trained, tmp_path):
  model_config, workdir, images = trained
  evaluator = evaluate.Evaluator(model_config)
  state, _ = evaluate.load_state_for_eval(model_config, workdir, evaluator.mesh)
  cfg = pair_base.attack_block('tiny')
  cfg.evasion_examples = 4
  # A score over a term the section does not compute itself (as a second model's log_px
  # would be), supplied by extra_stats_fn to both the attack and the re-evaluation.
  def brightness(x, key):
    del key
    return {'brightness': x.mean(axis=(1, 2, 3))}
  # And a term with no gradient (as a compressor's code length is), held fixed.
  def lit_pixels(images_uint8):
    return {'lit': (images_uint8 > 0).sum(axis=(1, 2, 3))}
  score_fns = {'bits/dim': lambda s: s['bits_per_dim'],
               'minus log p(z)': lambda s: -s['log_pz'].sum(-1),
               'brightness': lambda s: s['brightness'],
               'lit pixels': lambda s: s['lit'] + 0.0 * s['bits_per_dim']}
  fig_dir = str(tmp_path / 'figures')
  result = attack_section.run(evaluator, state, images, ood_labels=['mnist'],
                              attack_config=cfg, key=jax.random.PRNGKey(0), fig_dir=fig_dir,
                              model_name='glow', title='Glow', score_fns=score_fns,
                              extra_stats_fn=brightness, fixed_stats_fn=lit_pixels)
  json.dumps(result)  # results.json holds it as is

  table = result['table']
  epsilons = sorted(set(cfg.epsilons) | {cfg.headline_epsilon})
  assert len(table) == 2 * (2 * len(epsilons) + 1)
  # The three keys are distinct fold-ins of the run key, recorded as integers.
  keys = result['keys']
  expected = attack_section.attack_keys(jax.random.PRNGKey(0))
  for name in ('gradient', 'selection', 'reporting'):
    assert keys[name] == attack_section.key_data(expected[name])
  assert keys['selection'] != keys['reporting'] != keys['gradient'] != keys['selection']
  for row in table:
    assert row['n'] == cfg.examples
    assert row['selection_never_worse'], row
    assert 0.0 <= row['fraction_worse'] <= 1.0 - row['fraction_improved']
    # The shift of log p(x) is split exactly into its two terms.
    nats = -(row['bits_per_dim_after'] - row['bits_per_dim_before']) * 16 * 16 * np.log(2.0)
    assert row['log_pz_shift'] + row['logdet_shift'] == pytest.approx(nats, rel=1e-3, abs=1e-2)
    if row['objective'] == 'raise':
      assert row['bits_per_dim_after'] < row['bits_per_dim_before'], row
    elif row['objective'] == 'lower':
      assert row['bits_per_dim_after'] > row['bits_per_dim_before'], row
    else:
      assert row['distance_after'] <= row['distance_before'], row
  # A larger ball moves bits/dim at least as far.
  raised = {r['epsilon']: r['shift_mean'] for r in table
            if r['set'] == 'test' and r['objective'] == 'raise'}
  assert raised[max(raised)] <= raised[min(raised)]

  assert set(result['evasion']) == set(score_fns)
  json.dumps(result)
  # A score with no gradient gives the attack nothing to follow: no pixel moves.
  lit = result['evasion'].pop('lit pixels')
  assert lit['sets']['mnist']['score_after'] == lit['sets']['mnist']['score_before'] == (
      (images['mnist'][:4] > 0).sum(axis=(1, 2, 3)).mean())
  assert lit['in_score_after'] == lit['in_score_before']
  for entry in result['evasion'].values():
    assert entry['n_per_set'] == 4
    assert entry['in']['selection_never_worse']
    metrics = entry['sets']['mnist']
    assert metrics['selection_never_worse']
    # Every AUROC with its 95% bootstrap interval and the images on each side.
    for which in ('clean', 'ood_attacked', 'in_attacked', 'both_attacked'):
      low, high = metrics[which]['auroc_ci']
      assert low <= metrics[which]['auroc'] <= high
      assert metrics[which]['n_in'] == metrics[which]['n_out'] == 4
    assert metrics['score_after'] <= metrics['score_before']
    assert entry['in_score_after'] >= entry['in_score_before']
    assert metrics['auroc_ood_attacked'] <= metrics['auroc_clean']
    assert metrics['auroc_in_attacked'] <= metrics['auroc_clean']
  # Darkening is linear: the attack ends on the corner of the ball, every pixel lowered by
  # epsilon levels or down to 0.
  bright = result['evasion']['brightness']['sets']['mnist']
  ood = images['mnist'][:4].astype(np.float64)
  assert bright['score_before'] - bright['score_after'] == pytest.approx(
      np.minimum(ood, cfg.headline_epsilon).mean(), abs=1e-4)

  assert os.path.getsize(result['figure']) > 1000
  lines = attack_section.render(result, str(tmp_path), {'test': 'FashionMNIST test',
                                                        'mnist': 'MNIST'}, 'Glow')
  text = '\n'.join(lines)
  assert '![Glow attacks](figures/glow_attacks.png)' in text
  assert text.count('| FashionMNIST test | raise log p(x) |') == len(epsilons)
  assert '| minus log p(z) | MNIST | 2 | 4 |' in text
  clean = result['evasion']['bits/dim']['sets']['mnist']['clean']
  assert (f'{clean["auroc"]:.3f} [{clean["auroc_ci"][0]:.3f}, {clean["auroc_ci"][1]:.3f}]'
          in text)
  # The report's section from results.json's shape, as the pair report renders it.
  results = {'sets': [{'label': 'test', 'display': 'FashionMNIST test'},
                      {'label': 'mnist', 'display': 'MNIST'}],
             'models': {'glow': {'attacks': result}, 'cv_glow': {}}}
  section = '\n'.join(attack_section.render_section(results, str(tmp_path)))
  assert section.startswith(attack_section.HEADING) and '### Glow' in section
  assert '### CV-Glow' not in section and text in section


class _RecordingEvaluator(evaluate.Evaluator):
  """An Evaluator that records the key of every uint8 evaluation."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.keys_seen = []

  def __call__(self, variables, images, *, key, **kwargs):
    self.keys_seen.append(attack_section.key_data(key))
    return super().__call__(variables, images, key=key, **kwargs)


def test_selection_noise_is_not_the_reported_noise(trained, tmp_path, monkeypatch):
  """The keys pgd selects with and the keys the reported evaluations use never coincide,
  batch by batch."""
  model_config, workdir, images = trained
  evaluator = _RecordingEvaluator(model_config)
  state, _ = evaluate.load_state_for_eval(model_config, workdir, evaluator.mesh)
  selection_keys = []
  pgd_attack = attack_section.attacks.pgd_attack

  def recording_pgd(*args, select_key, **kwargs):
    selection_keys.append(attack_section.key_data(select_key))
    return pgd_attack(*args, select_key=select_key, **kwargs)
  monkeypatch.setattr(attack_section.attacks, 'pgd_attack', recording_pgd)
  cfg = pair_base.attack_block('tiny')
  cfg.update(examples=4, epsilons=(2,), num_steps=2, batch_size=4, bootstrap_resamples=20)
  result = attack_section.run(evaluator, state, images, ood_labels=['mnist'],
                              attack_config=cfg, key=jax.random.PRNGKey(5),
                              fig_dir=str(tmp_path), model_name='glow', title='Glow')
  assert selection_keys and evaluator.keys_seen
  # The evaluation's batch c draws fold_in(key, c): every per-batch key it can have drawn
  # (more batches than any evaluation here had).
  reported = {tuple(attack_section.key_data(jax.random.fold_in(jnp.asarray(k, jnp.uint32), c)))
              for k in evaluator.keys_seen for c in range(64)}
  assert not reported & {tuple(k) for k in selection_keys}
  assert {tuple(k) for k in evaluator.keys_seen} == {tuple(result['keys']['reporting'])}
  assert result['keys']['selection'] not in evaluator.keys_seen
  assert len(selection_keys) == len({tuple(k) for k in selection_keys})  # one per batch


def test_command_reports_under_an_independent_key(trained):
  """The selection's objective is the Evaluator's under the selection key and never worse
  there; the reported one is the Evaluator's under the reporting key, whatever its sign."""
  model_config, workdir, images = trained
  evaluator = evaluate.Evaluator(model_config)
  state, _ = evaluate.load_state_for_eval(model_config, workdir, evaluator.mesh)
  key = jax.random.PRNGKey(2)
  originals = images['mnist'][:6]
  result = attack_section.attack_images(evaluator, state, originals, objective='raise',
                                        epsilon=2, num_steps=3, noise_draws=1, key=key)
  keys = attack_section.attack_keys(key, reporting_key=key)
  assert result['keys']['reporting'] == attack_section.key_data(key)
  assert result['keys']['selection'] != result['keys']['reporting']

  def log_p(x, k):
    return evaluator(state, x, key=k)['log_p_discrete']
  selected_after = log_p(result['images'], keys['selection'])
  selected_before = log_p(originals, keys['selection'])
  np.testing.assert_allclose(result['selection_after'], selected_after, rtol=1e-6)
  np.testing.assert_allclose(result['selection_before'], selected_before, rtol=1e-6)
  assert np.all(selected_after >= selected_before)
  reported_gain = log_p(result['images'], key) - log_p(originals, key)
  np.testing.assert_allclose(result['objective_after'] - result['objective_before'],
                             reported_gain, rtol=1e-5, atol=1e-3)
  np.testing.assert_array_equal(result['after_stats']['log_p_discrete'],
                                log_p(result['images'], key))
  assert reported_gain.mean() > 0


def test_only_the_scores_that_read_other_models_run_them(trained):
  """Rows whose score reads extra_stats_fn's terms are attacked by an objective with that
  function; every other row by one without it (no other model's passes)."""
  model_config, workdir, _ = trained
  evaluator = evaluate.Evaluator(model_config)
  state, _ = evaluate.load_state_for_eval(model_config, workdir, evaluator.mesh)
  calls = []

  def brightness(x, key):
    del key
    calls.append(x.shape)
    return {'brightness': x.mean(axis=(1, 2, 3))}
  score_fns = {'bits/dim': lambda s: s['bits_per_dim'],
               'brightness': lambda s: s['brightness'] + s['bits_per_dim'],
               'lit': lambda s: s['lit'] * 1.0}
  attacker = attack_section._Attacker(  # pylint: disable=protected-access
      evaluator, state, pair_base.attack_block('tiny'),
      attack_section.attack_keys(jax.random.PRNGKey(0)), score_fns, brightness,
      lambda images: {'lit': (images > 0).sum(axis=(1, 2, 3))})
  assert attacker.needs_extra == [False, True, False]
  assert set(attacker.objectives) == {False, True}
  calls.clear()
  x = jnp.zeros((2, 16, 16, 1))
  args = (state, jnp.eye(5)[jnp.array([0, 3])], jnp.ones(2), jnp.zeros(2), {'lit': jnp.zeros(2)})
  attacker.objectives[False](x, jax.random.PRNGKey(1), *args)
  assert not calls
  attacker.objectives[True](x, jax.random.PRNGKey(1), *args)
  assert calls


@pytest.mark.parametrize('variant', ['quick', 'paper'])
def test_attack_blocks_attack_at_least_256_images_a_side(variant):
  cfg = pair_base.attack_block(variant)
  assert cfg.examples >= 256 and (cfg.evasion_examples or cfg.examples) >= 256
  assert cfg.bootstrap_resamples >= 1000


def test_attack_command_flags_parse():
  """The script holds only flags; --help lists them without importing the model code."""
  out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'experiments', 'attack.py'),
                        '--helpshort'], capture_output=True, text=True, check=False).stdout
  for flag in ('--images', '--objective', '--epsilon', '--output'):
    assert flag in out


def test_attack_command_output_evaluates_as_reported(trained, tmp_path):
  """The attacked npz, fed back to the ordinary evaluation, gives the printed bits/dim."""
  model_config, workdir, images = trained
  source = str(tmp_path / 'mine.npz')
  np.savez(source, test=images['mnist'][:5, ..., 0])
  out = attack_command.attack_file(model_config, workdir, source, str(tmp_path / 'out'),
                                  objective='raise', epsilon=3, num_steps=3, noise_draws=2,
                                  max_png=2)
  assert out['bits_per_dim_after'] < out['bits_per_dim_before']
  with np.load(out['npz']) as f:
    attacked, original, after = f['test'], f['original'], f['bits_per_dim_after']
  assert attacked.dtype == np.uint8 and attacked.shape == original.shape == (5, 16, 16, 1)
  assert np.abs(attacked.astype(int) - original.astype(int)).max() <= 3
  assert sorted(os.listdir(tmp_path / 'out' / 'png')) == ['00000.png', '00001.png']
  paths = evaluate.evaluate_checkpoint(
      model_config, workdir,
      eval_sets.resolve(model_config, {'attacked': eval_sets.eval_block('npz', path=out['npz'])}))
  (path,) = paths.values()
  with np.load(path) as f:
    # The evaluation reads the file in a seeded shuffle's order (subset_indices).
    np.testing.assert_allclose(f['bits_per_dim'], after[f['subset_indices']], rtol=1e-6)
    assert not np.array_equal(f['subset_indices'], np.arange(5))  # the order matters here
