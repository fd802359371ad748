"""SIGKILL a training run after its first checkpoint; the restarted run ends where an
uninterrupted run with the same seed ends, bit for bit."""

import os
import signal
import time

from tests.training.conftest import (REFERENCE_STEPS, load_checkpoint, max_abs_difference,
                                     reference_overrides, run_main, start_main)


def _committed_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  # Orbax renames a step directory into place only once it is complete.
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, idx_dir, reference_run,
                                                        tiny_config):
  workdir = str(tmp_path / 'killed')
  process = start_main(workdir, idx_dir, *reference_overrides(),
                       log_path=str(tmp_path / 'killed_log.txt'))
  try:
    deadline = time.time() + 120
    while not _committed_steps(workdir):
      assert process.poll() is None, open(tmp_path / 'killed_log.txt').read()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 120 s'
      time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
  finally:
    if process.poll() is None:
      process.kill()
  steps_at_kill = _committed_steps(workdir)
  assert steps_at_kill and steps_at_kill[-1] < REFERENCE_STEPS, steps_at_kill
  print(f'killed with checkpoints {steps_at_kill} of {REFERENCE_STEPS} steps')

  result = run_main(workdir, idx_dir, *reference_overrides())
  assert f'step {REFERENCE_STEPS}/{REFERENCE_STEPS}' in result.stdout

  resumed, resumed_meta = load_checkpoint(tiny_config, workdir)
  uninterrupted, reference_meta = load_checkpoint(tiny_config, reference_run)
  assert resumed_meta['step'] == reference_meta['step'] == REFERENCE_STEPS
  # Same computation on the same device, restored state and data position: exact.
  assert max_abs_difference(resumed.params, uninterrupted.params) == 0.0
  assert max_abs_difference(resumed.opt_state, uninterrupted.opt_state) == 0.0
  assert resumed_meta['train_bits_per_dim'] == reference_meta['train_bits_per_dim']
