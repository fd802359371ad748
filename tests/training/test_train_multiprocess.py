"""Two processes (jax.distributed over localhost, gloo CPU collectives) train and evaluate;
the multi-host evaluation matches a single-process evaluation of the same checkpoint."""

import os
import shutil
import socket
import subprocess

import numpy as np

from glow_ood import checkpointing
from glow_ood import eval_sets
from glow_ood import evaluate
from tests.training.conftest import REPO_ROOT, main_command, subprocess_env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, data_path, mode, *overrides, log_dir):
  port = _free_port()
  env = dict(subprocess_env(), JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  processes, logs = [], []
  for process_id in range(2):
    log_path = os.path.join(log_dir, f'{mode}_{process_id}.txt')
    logs.append(log_path)
    command = main_command(workdir, data_path, *overrides, mode=mode) + [
        '--multihost', f'--coordinator_address=localhost:{port}', '--num_processes=2',
        f'--process_id={process_id}']
    with open(log_path, 'wb') as log:
      processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT))
  try:
    codes = [p.wait(timeout=180) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  assert codes == [0, 0], '\n'.join(open(path).read()[-2000:] for path in logs)


def test_two_processes_train_and_evaluate(tmp_path, idx_dir, tiny_config):
  workdir = str(tmp_path / 'run')
  overrides = ('--config.train.num_steps=4', '--config.eval.dequantization=midpoint')
  _run_two_processes(workdir, idx_dir, 'train', *overrides, log_dir=str(tmp_path))
  assert checkpointing.available_steps(workdir) == [4]
  _run_two_processes(workdir, idx_dir, 'evaluate', *overrides, log_dir=str(tmp_path))

  two_process_file = str(tmp_path / 'two_process.npz')
  shutil.copy(os.path.join(workdir, 'eval', 'fashion_mnist_test_step4.npz'), two_process_file)
  tiny_config.eval.dequantization = 'midpoint'
  paths = evaluate.evaluate_checkpoint(tiny_config, workdir, eval_sets.resolve(tiny_config))
  with np.load(two_process_file) as two, np.load(paths['fashion_mnist_test']) as one:
    assert two['log_px'].shape == (40,)   # every test image once, padding dropped
    np.testing.assert_allclose(two['log_px'], one['log_px'], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(two['logdet_coupling'], one['logdet_coupling'], rtol=1e-5,
                               atol=1e-3)
