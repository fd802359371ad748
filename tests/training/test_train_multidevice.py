"""Data parallelism is exact up to float reassociation: 4 forced CPU devices match 1 device."""

import os

import numpy as np

from tests.training.conftest import (REFERENCE_CHECKPOINT_EVERY, load_checkpoint,
                                     max_abs_difference, reference_overrides, run_main)

# Summing the batch over 4 shards instead of 1 reorders float32 additions; after 10
# Adam steps at lr 1e-3 that moves parameters by ~1e-6 (measured), far below this.
PARAM_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-4   # bits/dim


def test_four_devices_match_one_device(tmp_path, idx_dir, reference_run, tiny_config):
  steps = REFERENCE_CHECKPOINT_EVERY
  workdir = str(tmp_path / 'four_devices')
  result = run_main(workdir, idx_dir, *reference_overrides(num_steps=steps), devices=4)
  assert 'step 10/10' in result.stdout

  four, four_meta = load_checkpoint(tiny_config, workdir, steps)
  one, one_meta = load_checkpoint(tiny_config, reference_run, steps)
  assert four_meta['step'] == one_meta['step'] == steps
  assert abs(four_meta['train_bits_per_dim'] - one_meta['train_bits_per_dim']) < LOSS_TOLERANCE
  # params include ActNorm's data-initialised scales and biases: statistics of one
  # device's quarter of the batch (2 images) would miss this tolerance by orders of magnitude.
  difference = max_abs_difference(four.params, one.params)
  print(f'max |params(4 devices) - params(1 device)| = {difference:.3g}')
  assert np.isfinite(difference) and difference < PARAM_TOLERANCE, difference
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(steps)))
