"""train -> checkpoint -> resume -> evaluate -> sample on a tiny Glow, on IDX files and mock TFDS."""

import dataclasses
import glob
import json
import math
import os

import jax
import numpy as np
from PIL import Image
import pytest

from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood import data
from glow_ood import eval_sets
from glow_ood import evaluate
from glow_ood import sample
from glow_ood import train
from tests.training.conftest import load_checkpoint


def _check_eval_file(path, *, num, num_levels, step, dataset, split, n_bits, num_dims):
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  for key in ('log_px', 'log_p_discrete', 'bits_per_dim'):
    assert arrays[key].shape == (num,), key
    assert np.all(np.isfinite(arrays[key])), key
  for key in ('log_pz', 'logdet_actnorm', 'logdet_invconv', 'logdet_coupling'):
    assert arrays[key].shape == (num, num_levels), key
  assert int(arrays['step']) == step and int(arrays['n_bits']) == n_bits
  assert int(arrays['num_dims']) == num_dims
  assert str(arrays['dataset']) == dataset and str(arrays['split']) == split
  # The decomposition adds up per image, and the discrete terms follow from log_px.
  total = arrays['log_pz'].sum(-1) + sum(
      arrays[f'logdet_{k}'].sum(-1) for k in ('actnorm', 'invconv', 'coupling'))
  np.testing.assert_allclose(arrays['log_px'], total, rtol=1e-5, atol=1e-3)
  constant = num_dims * n_bits * math.log(2)
  np.testing.assert_allclose(arrays['log_p_discrete'], arrays['log_px'] - constant, rtol=1e-6)
  np.testing.assert_allclose(arrays['bits_per_dim'],
                             -arrays['log_p_discrete'] / (num_dims * math.log(2)), rtol=1e-6)
  return arrays


def test_train_resume_evaluate_sample_on_idx_files(tiny_config, tmp_path, capsys):
  config = tiny_config
  workdir = str(tmp_path / 'run')
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.train.eval_every = 4
  config.train.ema_decay = 0.9
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  assert checkpointing.available_steps(workdir) == [2, 4]
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_000004_T0.7.png'))
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert 'test bits/dim' in capsys.readouterr().out

  # A second call with a larger budget resumes at step 4 rather than starting over.
  config.train.num_steps = 6
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 6
  assert checkpointing.available_steps(workdir) == [2, 4, 6]
  resumed, meta = load_checkpoint(config, workdir)
  assert meta['step'] == 6 and meta['data_position'] == 6
  assert math.isfinite(meta['train_bits_per_dim'])
  assert resumed.ema_params is not None

  # 40 test images in batches of 16: the last batch is padded and the padding dropped.
  config.evals.fm_mid_train = eval_sets.eval_block(
      'fashion_mnist', 'train', dequantization='midpoint', max_examples=20, batch_size=8)
  sets = config_validation.validate_config(config, device_count=1)
  paths = evaluate.evaluate_checkpoint(config, workdir, sets)
  assert set(paths) == {'fashion_mnist_test', 'fm_mid_train'}
  assert paths['fashion_mnist_test'].endswith('eval/fashion_mnist_test_step6.npz')
  common = dict(num_levels=2, step=6, n_bits=8, num_dims=256, dataset='fashion_mnist')
  test_arrays = _check_eval_file(paths['fashion_mnist_test'], num=40, split='test', **common)
  mid_train = _check_eval_file(paths['fm_mid_train'], num=20, split='train', **common)
  assert 'bits/dim' in capsys.readouterr().out
  # Which rows were evaluated is recorded: the first 20 of a seeded shuffle of the split.
  split_size = len(data.load_array(sets[1].data, 'train'))
  assert int(mid_train['subset_seed']) == 0
  np.testing.assert_array_equal(mid_train['subset_indices'],
                                data.subset_indices(split_size, 20, 0))
  assert json.loads(str(mid_train['settings']))['weights'] == 'ema'

  # Raw weights after EMA: a new file, and the EMA one kept aside under its settings' hash.
  config.eval.use_ema = False
  raw = evaluate.evaluate_checkpoint(config, workdir, sets[:1])['fashion_mnist_test']
  config.eval.use_ema = True
  kept = glob.glob(os.path.join(workdir, 'eval', 'fashion_mnist_test_step6.*.npz'))
  assert len(kept) == 1, kept
  with np.load(kept[0]) as f, np.load(raw) as g:
    assert json.loads(str(f['settings']))['weights'] == 'ema'
    assert json.loads(str(g['settings']))['weights'] == 'raw'
    np.testing.assert_array_equal(f['log_px'], test_arrays['log_px'])
    assert not np.array_equal(g['log_px'], test_arrays['log_px'])
  # Learnable blobs: a few steps already beat the 8 bits/dim of a uniform model.
  assert test_arrays['bits_per_dim'].mean() < 8.0

  # Any checkpoint can be evaluated; a missing one is a clear error.
  older = evaluate.evaluate_checkpoint(config, workdir, sets[:1], step=2)
  assert older['fashion_mnist_test'].endswith('fashion_mnist_test_step2.npz')
  with pytest.raises(FileNotFoundError, match='available steps'):
    evaluate.evaluate_checkpoint(config, workdir, sets, step=3)

  paths = sample.write_samples(config, workdir)
  assert [os.path.basename(p) for p in paths] == ['step_000006_T0.7.png',
                                                  'step_000006_T1.0.png']
  grid = np.asarray(Image.open(paths[0]))
  assert grid.shape == (2 * 17 - 1, 2 * 17 - 1)   # 4 samples of 16x16 in a 2x2 grid
  assert not glob.glob(os.path.join(workdir, 'eval', '.tmp_*'))


def test_train_and_evaluate_under_mock_tfds(tiny_config, tmp_path, tfds_read_up_front):
  config = tiny_config
  config.data.source = 'tfds'
  config.data.path = None
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.evals.mnist_test = eval_sets.eval_block('mnist', 'test', source='tfds')
  workdir = str(tmp_path / 'run')
  spec = data.DataSpec.from_config(config.data)
  tfds_read_up_front([(spec, 'train'), (spec, 'test'),
                      (dataclasses.replace(spec, name='mnist'), 'test')], num_examples=24)
  train.train_and_evaluate(config, workdir)
  paths = evaluate.evaluate_checkpoint(config, workdir, eval_sets.resolve(config))
  with np.load(paths['mnist_test']) as f:
    assert f['log_pz'].shape == (24, 2)
    assert str(f['dataset']) == 'mnist'
  with np.load(paths['fashion_mnist_test']) as f:
    assert f['bits_per_dim'].shape == (24,)


def _trace_files(workdir):
  return glob.glob(os.path.join(workdir, 'plugins', 'profile', '*', '*.xplane.pb'))


def test_profile_steps_writes_one_trace_ten_steps_in(tiny_config, tmp_path):
  config = tiny_config
  config.train.checkpoint_every = 100
  config.train.eval_every = 0
  config.train.num_steps = 9            # ends before step 10: no trace at all
  config.train.profile_steps = 2
  train.train_and_evaluate(config, str(tmp_path / 'short'))
  assert not _trace_files(str(tmp_path / 'short'))
  config.train.num_steps = 11           # ends inside the trace: it is closed and written
  train.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert len(_trace_files(str(tmp_path / 'cut'))) == 1
  config.train.num_steps = 14           # the whole trace, once
  train.train_and_evaluate(config, str(tmp_path / 'full'))
  assert len(_trace_files(str(tmp_path / 'full'))) == 1
  # No trace was left running.
  jax.profiler.start_trace(str(tmp_path / 'after'))
  jax.profiler.stop_trace()
