"""Every pair end to end on a tiny model: training, evaluation, analysis and report.md.

FashionMNIST -> MNIST runs fully (and again, to check that a rerun resumes);
the other pairs run with fewer steps. Offline pairs read tiny IDX/.npz files
written here, the TFDS pairs run under tfds.testing.mock_data.
"""

import json
import os
import re

import ml_collections
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from glow_ood import analysis
from glow_ood import checkpointing
from glow_ood import data
from glow_ood import eval_sets
from glow_ood.experiment import attack_section
from glow_ood.experiment import eval_plan
from glow_ood.experiment import pipeline
from glow_ood.experiment import report
from glow_ood.configs.pairs import pair_base
from tests.experiments.conftest import REPO_ROOT, tiny_pair_config


def _check_report(workdir: str, results: dict) -> str:
  """Every heading present, every referenced PNG exists and is non-empty."""
  with open(os.path.join(workdir, 'report.md')) as f:
    text = f.read()
  for heading in report.HEADINGS:
    assert heading in text, heading
  # The headline is the declared detector; a best-of-all pick says it was made on test data.
  assert report.OOD_HEADINGS[0] in text and 'picked on this test OOD set' in text
  assert 'log p(x) reversed' in text
  if any(r.get('corruptions') for r in results['models'].values()):
    assert report.OOD_HEADINGS[3] in text
  images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
  models = list(results['models'])
  ood_labels = [s['label'] for s in results['sets'] if s['is_ood']]
  flows = [m for m in models if 'log_pz' in results['models'][m]['sets']['test']]
  smooth = [m for m in models if results['models'][m]['second_order']]
  expected = {f'figures/{m}_{kind}.png' for m in models for kind in ('log_px_hist', 'graying')}
  expected |= {f'figures/{m}_decomposition_hist.png' for m in flows}
  expected |= {f'figures/{m}_training_curves.png' for m in models
               if results['models'][m]['curves']['steps']}
  assert [m for m in models if results['models'][m]['curves']['steps']] == [
      m for m in models if m in results['experiment']['curve_models'].split(',')]
  expected |= {f'figures/{m}_second_order_{l}.png' for m in smooth for l in ood_labels}
  expected |= {f'figures/{m}_scores_hist.png' for m in models}
  if results['experiment']['attacks']['enabled']:
    expected |= {f'figures/{m}_attacks.png' for m in smooth}
  assert attack_section.HEADING in text
  expected.add('figures/data_channel_stats.png')
  temperatures = results['model_configs'][models[0]]['sample']['temperatures']
  step = {m: results['models'][m]['step'] for m in models}
  expected |= {f'{m}/samples/step_{step[m]:06d}_T{t}.png' for m in models for t in temperatures}
  assert set(images) == expected
  for image in images:
    path = os.path.join(workdir, image)
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    if '/samples/' in image:  # a few tiny samples: small files, but not blank
      assert np.asarray(Image.open(path)).std() > 0, path
    else:
      assert os.path.getsize(path) > 1000, path
  assert '**yes**' in text or '**no**' in text  # the generated conclusions
  return text


def _check_numbers_match_npz(text: str, results: dict) -> None:
  """The Figure 1 table shows each npz file's mean bits/dim, N and std."""
  table = text.split(report.HEADINGS[0])[1].split('##')[0]
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in table.splitlines()
          if line.startswith('| ') and not line.startswith('| model')]
  titles = {title: model for model, title in eval_plan.MODEL_TITLES.items()}
  displays = {s['display']: s['label'] for s in results['sets']}
  assert len(rows) == len(results['models']) * len(results['sets'])
  for title, display, n, bpd, std, _ in rows:
    summary = results['models'][titles[title]]['sets'][displays[display]]
    with np.load(summary['npz']) as f:
      values = f['bits_per_dim']
    assert int(n) == values.size
    assert float(bpd) == pytest.approx(values.mean(), abs=6e-4)
    assert float(std) == pytest.approx(values.std(), abs=6e-4)
  # And results.json agrees with the same files on the decomposition.
  for model in results['models'].values():
    for summary in model['sets'].values():
      with np.load(summary['npz']) as f:
        if 'log_pz' in f.files:
          assert summary['log_pz'] == pytest.approx(f['log_pz'].sum(-1).mean(), rel=1e-6)
        assert summary['log_px'] == pytest.approx(f['log_p_discrete'].mean(), rel=1e-6)


EVERY_SCORE = {'log p(x)', 'log p(x) reversed', 'typicality', 'typicality (batch 4)',
               'likelihood ratio', 'input complexity (PNG)', 'log p(z_0)', 'log p(z_1)',
               'level ratio', 'level ratio (two-sided)', 'DoSE (KDE)', 'DoSE (Gaussian)',
               'combined', 'WAIC'}


# Scores that need a flow's per-level terms, or a background model (flows only by default).
FLOW_ONLY_SCORES = {'log p(z_0)', 'log p(z_1)', 'level ratio', 'level ratio (two-sided)',
                    'likelihood ratio'}


def _check_scores(workdir, model, res, config):
  """Every score on every OOD and stress set, per-image files that give the metrics."""
  is_flow = config[model].model.kind == 'glow'
  every = EVERY_SCORE if is_flow else EVERY_SCORE - FLOW_ONLY_SCORES
  if config[model].model.kind == 'pixelcnn':  # log p(x) alone: nothing for DoSE to model
    every = every - {'DoSE (KDE)', 'DoSE (Gaussian)'}
  with_seeds = model in config.experiment.ensemble_models.split(',')
  if not with_seeds:
    every = every - {'WAIC'}
  with_background = model in config.background.models.split(',')
  assert not with_background or is_flow
  if not with_background:
    every = every - {'likelihood ratio'}
  assert set(res['ood_metrics']['mnist']) == every
  stress = {f'stress_{n}' for n in config.experiment.stress.split(',')}
  assert set(res['stress']) == stress
  for label in stress:
    assert set(res['stress'][label]['metrics']) == every
    assert res['stress'][label]['n'] == config.experiment.stress_examples
  # The corruption suite: every listed corruption at every severity, every score on each.
  exp = config.experiment
  assert {(e['corruption'], e['severity']) for e in res['corruptions'].values()} == {
      (c, s) for c in exp.corruptions.split(',') for s in exp.corruption_severities}
  for entry in res['corruptions'].values():
    assert set(entry['metrics']) == every and entry['n'] == exp.corruption_examples
  # The declared detector is the config's, and every AUROC carries its interval and sizes.
  assert res['detector'] == exp.detector == 'combined'
  for name, metric in res['ood_metrics']['mnist'].items():
    low, high = metric['auroc_ci']
    assert low <= metric['auroc'] <= high
    per_batch = 4 if name == 'typicality (batch 4)' else 1  # batches of 4 images
    assert metric['n_in'] == metric['n_out'] == 32 // per_batch
  # The background model and the second ensemble member were trained in their own workdirs.
  members = (({f'{model}_seed1'} if with_seeds else set())
             | ({f'{model}_background'} if with_background else set()))
  assert set(res['members']) == members
  for member in res['members'].values():
    assert checkpointing.available_steps(member['workdir'])[-1] == config[model].train.num_steps
  # The metrics are those of the per-image score files.
  keys = res['score_descriptions']
  with np.load(os.path.join(workdir, 'scores', model, 'test.npz')) as f_in, \
       np.load(os.path.join(workdir, 'scores', model, 'mnist.npz')) as f_out:
    for name, metric in res['ood_metrics']['mnist'].items():
      if '(batch' in name or name == 'log p(x) reversed':
        continue
      key = keys[name]['file_key']
      assert f_in[key].shape == (32,) and f_out[key].shape == (32,)
      assert metric['auroc'] == pytest.approx(analysis.auroc(f_in[key], f_out[key]))
    # log p(x)'s score is the bits/dim of the evaluation file.
    with np.load(res['sets']['test']['npz']) as ev:
      np.testing.assert_allclose(f_in['log_p_x'], ev['bits_per_dim'], rtol=1e-6)


def _offline_config(pair, data, **overrides):
  config = tiny_pair_config(pair, **overrides)
  for model in pair_base.model_configs(config):
    if pair == 'fashion_mnist_to_mnist':
      model.data.path = data['fashion_idx']
    else:
      model.data.path = data['glyphs_npz']
  config.experiment.ood.mnist.data.path = data['mnist_npz']
  return config


def test_fashion_mnist_to_mnist_end_to_end_and_resume(offline_data, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'fm_mnist')
  config = _offline_config('fashion_mnist_to_mnist', offline_data)
  results = pipeline.run_pair(config, workdir)
  text = _check_report(workdir, results)
  _check_numbers_match_npz(text, results)
  # Where the time went: every phase of every model, within the invocation's wall clock.
  devices = {'count': jax.device_count(), 'platform': jax.default_backend(),
             'cores': len(os.sched_getaffinity(0))}
  assert results['devices'] == devices and results['workers'] is None   # library call: in turn
  assert all(res['devices'] == devices for res in results['models'].values())
  phases = results['phases_s']
  for model in results['models']:
    assert {f'{model}: train and evaluate', f'{model}: stress and corruption sets',
            f'{model}: scores, Section 5, attacks, graying'} <= set(phases)
  assert 0 < sum(phases.values()) <= results['run_wall_clock_s']
  # XLA's compile time of each phase, within it; the first phase compiles the train steps.
  assert set(results['compile_s']) == set(phases)
  assert all(0 <= results['compile_s'][p] <= phases[p] for p in phases)
  assert results['compile_s']['glow: train and evaluate'] > 0
  for model, res in results['models'].items():
    # The analysis phase split into its parts; attacks only for models smooth in the pixels.
    parts = res['analysis_parts_s']
    assert set(parts) == ({'load and Section 5', 'attacks', 'graying'} if 'attacks' in res
                          else {'load and Section 5', 'graying'}), (model, parts)
    assert all(v >= 0 for v in parts.values()) and sum(parts.values()) <= res['analysis_s']
    assert 0 < res['scores_s'] <= phases[f'{model}: scores, Section 5, attacks, graying']
  assert 'Where this invocation\'s time went' in text
  for model in ('glow', 'cv_glow'):
    assert checkpointing.available_steps(os.path.join(workdir, model)) == [3, 6]
    res = results['models'][model]
    assert res['curves']['steps'] == [3, 6]
    assert set(res['curves']['bits_per_dim']) == {'train', 'test', 'mnist'}
    assert res['sets']['mnist']['n'] == 32 and res['sets']['train']['n'] == 32
    _check_scores(workdir, model, res, config)
    # Every score named in the attack block that the model has (WAIC: only with seeds)
    # is evaded.
    attacked = res['attacks']
    named = set(config.experiment.attacks.scores.split(','))
    assert set(attacked['evasion']) == named & set(res['ood_metrics']['mnist'])
    assert ('WAIC' in attacked['evasion']) == ('likelihood ratio' in attacked['evasion']) == (
        model == 'glow')
    # The best iterate is selected under one noise key, reported under an independent one.
    assert attacked['keys']['selection'] != attacked['keys']['reporting']
    assert all(row['selection_never_worse'] for row in attacked['table'])
    for entry in attacked['evasion'].values():
      for which in ('clean', 'ood_attacked', 'in_attacked', 'both_attacked'):
        low, high = entry['sets']['mnist'][which]['auroc_ci']
        assert low <= entry['sets']['mnist'][which]['auroc'] <= high
    assert ('closed_form' in res['second_order']['mnist']) == (model == 'cv_glow')
  # CV-Glow's volume term is the same for every image.
  cv_sets = results['models']['cv_glow']['sets']
  assert cv_sets['mnist']['logdet'] == pytest.approx(cv_sets['test']['logdet'], abs=1e-3)
  # PixelCNN++ and the VAE: the same launcher, evaluation, scores and report (Figure 3).
  for model in ('pixelcnn', 'vae'):
    res = results['models'][model]
    assert res['kind'] == model
    assert checkpointing.available_steps(os.path.join(workdir, model)) == [3, 6]
    _check_scores(workdir, model, res, config)
    assert 'log_pz' not in res['sets']['test'] and not res['second_order']
    assert 'attacks' not in res
  assert set(results['models']['vae']['sets']['test']) >= {'elbo', 'kl', 'log_px_given_z'}
  assert 'PixelCNN++, VAE are not flows' in text and 'not attacked' in text
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['pair'] == 'fashion_mnist_to_mnist'

  # A rerun neither trains nor re-evaluates: it only re-analyses and rewrites the report.
  # A flow (with its seed and background members) and the VAE: the skip is the same code
  # for every kind, and the analysis it reruns was checked above (so no attacks, to save time).
  config.experiment.models = 'glow,vae'
  config.experiment.attacks.enabled = False
  def fail(*args, **kwargs):
    raise AssertionError('should not run again')
  monkeypatch.setattr(pipeline.model_runs.train, 'train_and_evaluate', fail)
  monkeypatch.setattr(pipeline.model_runs.evaluate, 'evaluate_checkpoint', fail)
  # One corrupted image whose log p(z) overflowed float32 (as a glyph-trained Glow gives on
  # some severe Canny-edge images): the analysis ranks it, counts it and says so.
  overflowed = 'corruption_shot_noise_s5'
  path = os.path.join(workdir, 'glow', 'eval', f'{overflowed}_generated_step6.npz')
  arrays = dict(np.load(path))
  arrays['log_pz'][0, 0] = -np.inf
  for key, value in (('log_px', -np.inf), ('log_p_discrete', -np.inf), ('bits_per_dim', np.inf)):
    arrays[key][0] = value
  np.savez(path, **arrays)
  again = pipeline.run_pair(config, workdir)
  for model in ('glow', 'vae'):
    assert again['models'][model]['sets'] == results['models'][model]['sets']
    assert again['models'][model]['ood_metrics'] == results['models'][model]['ood_metrics']
  entry = again['models']['glow']['corruptions'][overflowed]
  assert entry['n_overflowed'] == 1 and np.isfinite(entry['bits_per_dim'])
  assert entry['bits_per_dim'] == pytest.approx(np.mean(arrays['bits_per_dim'][1:]))
  entry_keys = again['models']['glow']['score_descriptions']
  with np.load(os.path.join(workdir, 'scores', 'glow', f'{overflowed}.npz')) as f:
    assert f['log_p_x'][0] == np.inf and not np.isnan(np.stack([f[k] for k in f.files])).any()
    assert f[entry_keys['DoSE (Gaussian)']['file_key']][0] == np.inf
  for name, metric in entry['metrics'].items():
    assert 0.0 <= metric['auroc'] <= 1.0 and metric['n_out'] == (2 if '(batch' in name else 8)
  with open(os.path.join(workdir, 'report.md')) as f:
    assert 'Glow on shot_noise severity 5: 1 of 8' in f.read()

  # Another OOD set: the scores of the in-distribution sets (every fitted part) stay the same.
  # A flow and the VAE (DoSE models different terms for each).
  monkeypatch.undo()
  before = {m: dict(np.load(os.path.join(workdir, 'scores', m, 'test.npz')))
            for m in ('glow', 'vae')}
  config.experiment.ood = ml_collections.ConfigDict(
      {'glyphs': eval_sets.eval_block('mnist', 'test', path=offline_data['glyphs_npz'])})
  config.experiment.headline_ood = 'glyphs'
  swapped = pipeline.run_pair(config, workdir)
  assert set(swapped['models']) == {'glow', 'vae'}
  for model in swapped['models']:
    assert set(swapped['models'][model]['ood_metrics']) == {'glyphs'}
    with np.load(os.path.join(workdir, 'scores', model, 'test.npz')) as f:
      assert set(f.files) == set(before[model])
      for key in f.files:
        np.testing.assert_array_equal(f[key], before[model][key])


def test_notmnist_to_mnist_end_to_end(offline_data, tmp_path):
  workdir = str(tmp_path / 'notmnist')
  config = _offline_config('notmnist_to_mnist', offline_data, num_steps=2, checkpoint_every=2)
  assert config.glow.data.name == config.pixelcnn.data.name == 'notmnist_glyphs'
  # One model: the other kinds and WAIC's extra seeds are exercised by the pair above.
  config.experiment.models = 'cv_glow'
  config.experiment.ensemble_size = 0
  results = pipeline.run_pair(config, workdir)
  _check_numbers_match_npz(_check_report(workdir, results), results)


@pytest.mark.parametrize('pair, ood_labels', [
    ('cifar10_to_svhn', ['svhn_cropped']),
    ('celeb_a_to_svhn', ['svhn_cropped']),
    ('imagenet32_to_cifar10_cifar100_svhn', ['cifar10', 'cifar100', 'svhn_cropped']),
])
def test_tfds_pair_end_to_end_under_mock_data(pair, ood_labels, tmp_path, tfds_read_up_front):
  workdir = str(tmp_path / pair)
  config = tiny_pair_config(pair, num_steps=2, checkpoint_every=2)
  # One model: the other kinds are exercised by the offline pair.
  config.experiment.models = 'cv_glow'
  config.cv_glow.data.source = 'tfds'
  config.experiment.curve_models = 'cv_glow'
  # The extra models and the attacks are exercised by the offline pairs; here every score
  # that needs no other model still runs, on every OOD set.
  config.background.models = ''
  config.experiment.ensemble_size = 0
  config.experiment.attacks.enabled = False
  # The stress suite and the sample form of the trace term run on the offline pairs;
  # here they would only repeat the same code on other images.
  config.experiment.stress = ''
  config.experiment.sample_trace_examples = 0
  sets = eval_plan.eval_sets(config, 'cv_glow')
  assert all(data.resolve_source(s.entry.data, s.entry.split) == 'tfds' for s in sets)
  tfds_read_up_front([(data.DataSpec.from_config(config.cv_glow.data), 'train')]
                     + [(s.entry.data, s.entry.split) for s in sets], num_examples=24)
  results = pipeline.run_pair(config, workdir)
  assert [s['label'] for s in results['sets'] if s['is_ood']] == ood_labels
  assert results['model_configs']['cv_glow']['data']['channels'] == 3
  res = results['models']['cv_glow']
  assert res['sets']['train']['n'] == 24
  assert res['sets']['test']['n'] == 24
  for label in ood_labels:
    assert {'log p(x)', 'typicality', 'level ratio', 'DoSE (KDE)', 'DoSE (Gaussian)',
            'input complexity (PNG)'} <= set(res['ood_metrics'][label])
  text = _check_report(workdir, results)
  _check_numbers_match_npz(text, results)


def test_experiment_command_on_two_cpu_devices(offline_data, tmp_path):
  """experiments/reproduce.py --cpu_devices=2: training, evaluation, scores, Section 5 and the
  attacks run with their batches sharded over two devices (stress and corruption sets and
  the checkpoint curves go through the same Evaluator as the test set: left out for time)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.training.conftest import subprocess_env  # pylint: disable=g-import-not-at-top
  env = subprocess_env()
  env['XLA_FLAGS'] = '--xla_cpu_use_fusion_emitters=false'  # no forced device count
  workdir = tmp_path / 'two_devices'
  data = [f'--config.{m}.data.path={offline_data["fashion_idx"]}' for m in pair_base.MODELS]
  result = subprocess.run(
      [sys.executable, os.path.join('experiments', 'reproduce.py'), '--variant=tiny',
       f'--workdir={workdir}', '--cpu_devices=2', '--config.experiment.models=cv_glow',
       '--config.experiment.ensemble_size=0', '--config.background.models=',
       '--config.experiment.stress=', '--config.experiment.corruptions=',
       '--config.experiment.curve_models=',
       f'--config.experiment.ood.mnist.data.path={offline_data["mnist_npz"]}', *data],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert 'CPU split into 2 JAX devices (--cpu_devices=2' in result.stdout
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  assert results['devices'] == {'count': 2, 'platform': 'cpu', 'cores': len(os.sched_getaffinity(0))}
  assert results['workers'] is None   # a device split asked for: one process, no workers
  res = results['models']['cv_glow']
  assert res['attacks']['table'] and res['second_order']['mnist']
  assert 0.0 <= res['ood_metrics']['mnist']['log p(x)']['auroc'] <= 1.0


def test_compile_clock_counts_xla_compiles_only_while_active():
  # A program of a shape never compiled before, so neither cache can answer.
  program = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.0))
  fresh = lambda n: program(jnp.ones(n)).block_until_ready()
  with pipeline.CompileClock() as clock:
    fresh(7919)
    inside = clock.total
    assert inside > 0
    fresh(7919)  # the same program again: no compile
    assert clock.total == inside
  fresh(7907)  # compiled after the clock stopped listening
  assert clock.total == inside
