"""PixelCNN++ and the VAE through the same launcher as Glow: train, resume after SIGKILL bit for
bit, evaluate, sample; each evaluation file holds the kind's own terms and nothing else."""

import glob
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from glow_ood import eval_sets
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import sample
from glow_ood import train
from glow_ood.configs import tiny
from tests.training.conftest import (REPO_ROOT, kill_after_first_checkpoint, load_checkpoint,
                                     max_abs_difference, subprocess_env)

TINY = os.path.join(REPO_ROOT, 'glow_ood', 'configs', 'tiny.py')
STEPS = 12
KIND_TERMS = {'pixelcnn': {'log_px'}, 'vae': {'log_px', 'elbo', 'log_px_given_z', 'kl'}}


def _config(kind, idx_dir):
  config = tiny.get_config(kind)
  config.data.path = idx_dir
  config.train.num_steps = STEPS
  config.train.checkpoint_every = 2
  config.train.log_every = 2
  return config


def _command(kind, workdir, idx_dir):
  return [sys.executable, '-m', 'glow_ood.main', f'--config={TINY}:{kind}',
          f'--workdir={workdir}', f'--config.data.path={idx_dir}',
          f'--config.train.num_steps={STEPS}', '--config.train.checkpoint_every=2',
          '--config.train.log_every=2']


@pytest.mark.parametrize('kind', ['pixelcnn', 'vae'])
def test_kind_trains_resumes_after_sigkill_evaluates_and_samples(kind, idx_dir, tmp_path):
  # The uninterrupted run, in this process.
  config = _config(kind, idx_dir)
  reference = str(tmp_path / 'reference')
  train.train_and_evaluate(config, reference)

  # The same run killed after its first checkpoint, then restarted: the same end state.
  killed = str(tmp_path / 'killed')
  log = open(tmp_path / 'log.txt', 'wb')
  process = subprocess.Popen(_command(kind, killed, idx_dir), cwd=REPO_ROOT,
                             env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
  steps_at_kill = kill_after_first_checkpoint(process, killed, tmp_path / 'log.txt')
  assert steps_at_kill and steps_at_kill[-1] < STEPS
  result = subprocess.run(_command(kind, killed, idx_dir), cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  resumed, resumed_meta = load_checkpoint(config, killed)
  uninterrupted, meta = load_checkpoint(config, reference)
  assert resumed_meta['step'] == meta['step'] == STEPS
  assert max_abs_difference(resumed.params, uninterrupted.params) == 0.0
  assert max_abs_difference(resumed.opt_state, uninterrupted.opt_state) == 0.0

  # Evaluation: the kind's terms, the derived bits/dim, no Glow term filled with zeros.
  sets = eval_sets.resolve(config)
  paths = evaluate.evaluate_checkpoint(config, reference, sets)
  with np.load(paths['fashion_mnist_test']) as f:
    arrays = {k: f[k] for k in f.files}
  per_image = {k for k, v in arrays.items() if v.ndim >= 1} - set(eval_files.METADATA_KEYS)
  assert per_image == KIND_TERMS[kind] | {'log_p_discrete', 'bits_per_dim'}
  # Which rows of the split were scored: the whole 40-image test split, each row once.
  assert sorted(arrays['subset_indices'].tolist()) == list(range(40))
  assert arrays['log_px'].shape == (40,) and np.all(np.isfinite(arrays['log_px']))
  num_dims = 16 * 16
  np.testing.assert_allclose(arrays['bits_per_dim'],
                             -arrays['log_p_discrete'] / (num_dims * math.log(2)), rtol=1e-6)
  # Learnable blobs: a few steps already beat a uniform model's 8 bits/dim.
  assert arrays['bits_per_dim'].mean() < 8.0
  if kind == 'vae':
    # The importance-weighted bound is at least the ELBO on average.
    bound = arrays['log_p_discrete']
    assert bound.mean() >= arrays['elbo'].mean() - 1e-3
    np.testing.assert_allclose(arrays['elbo'], arrays['log_px_given_z'] - arrays['kl'],
                               rtol=1e-5, atol=1e-3)

  paths = sample.write_samples(config, reference)
  assert [os.path.basename(p) for p in paths] == [f'step_{STEPS:06d}_T0.7.png',
                                                  f'step_{STEPS:06d}_T1.0.png']
  assert glob.glob(os.path.join(reference, 'events.out.tfevents.*'))
