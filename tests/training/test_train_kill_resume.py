"""SIGKILL a training run after its first checkpoint; the restarted run ends where an
uninterrupted run with the same seed ends, bit for bit."""

from tests.training.conftest import (REFERENCE_STEPS, kill_after_first_checkpoint,
                                     load_checkpoint, max_abs_difference, reference_overrides,
                                     run_main, start_main)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, idx_dir, reference_run,
                                                        tiny_config):
  workdir = str(tmp_path / 'killed')
  process = start_main(workdir, idx_dir, *reference_overrides(),
                       log_path=str(tmp_path / 'killed_log.txt'))
  steps_at_kill = kill_after_first_checkpoint(process, workdir, tmp_path / 'killed_log.txt',
                                              timeout=120)
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
