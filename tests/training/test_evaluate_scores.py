"""--mode=evaluate's OOD scores on a user's own npz set, with known answers where they exist."""

import os

import numpy as np

from glow_ood import eval_sets
from glow_ood import score_files
from glow_ood import train


def test_evaluate_writes_every_score_for_an_npz_set(tiny_config, tmp_path, capsys):
  config = tiny_config
  workdir = str(tmp_path / 'run')
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  train.train_and_evaluate(config, workdir)

  # A user's own images: 20x20 grey noise, fitted to the model's 16x16 on loading.
  own = str(tmp_path / 'own.npz')
  np.savez(own, test=np.random.default_rng(0).integers(0, 256, (24, 20, 20), np.uint8))
  config.scores.fit_examples = 32
  config.scores.reference_examples = 24
  config.scores.compressors = 'png,zlib'
  # The model as its own background and ensemble: the likelihood ratio is exactly 0 and
  # WAIC (no spread between identical members) exactly -log p(x).
  config.scores.background_workdir = workdir
  config.scores.ensemble_workdirs = workdir
  own_set = eval_sets.resolve(config, {'npz_test': eval_sets.eval_block('npz', 'test', path=own)})
  paths = score_files.evaluate_and_score(config, workdir, own_set)
  scores_file = score_files.scores_path(paths['npz_test'])
  assert scores_file.endswith(os.path.join('eval', 'npz_test_step2_scores.npz'))
  with np.load(scores_file) as f, np.load(paths['npz_test']) as ev:
    values = {k: f[k] for k in f.files}
    assert set(values) == {'log_p_x', 'typicality', 'likelihood_ratio', 'input_complexity_PNG',
                           'input_complexity_zlib', 'log_p_z_0', 'log_p_z_1', 'level_ratio',
                           'level_ratio_two_sided', 'combined', 'DoSE_KDE', 'DoSE_Gaussian',
                           'WAIC', 'step'}
    assert all(np.all(np.isfinite(values[k])) for k in values if k != 'step')
    np.testing.assert_allclose(values['log_p_x'], ev['bits_per_dim'], rtol=1e-6)
    np.testing.assert_array_equal(values['likelihood_ratio'], 0.0)
    np.testing.assert_allclose(values['WAIC'], -ev['log_px'], rtol=1e-6)
    np.testing.assert_allclose(values['log_p_z_1'], -ev['log_pz'][:, 1], rtol=1e-6)
  # Uniform noise is far from the blobs the model was trained on: every image flagged.
  out = capsys.readouterr().out
  assert 'OOD scores' in out
  row = [line for line in out.split('OOD scores')[1].splitlines() if line.startswith('npz_test')][0]
  assert float(row.split()[1]) == 1.0   # AUROC of log p(x) against the test blobs
  with np.load(scores_file) as f:
    noise_bpd = f['log_p_x']
  assert noise_bpd.mean() > 7.0

  # Scores off: evaluation files only.
  config.scores.enabled = False
  os.remove(scores_file)
  score_files.evaluate_and_score(config, workdir, own_set)
  assert not os.path.exists(scores_file)
