"""Shared pieces of the training tests: tiny IDX data, the tiny config, subprocess runs."""

import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO_ROOT, 'glow_ood', 'configs', 'tiny.py')

# The reference run that the multi-device and kill-and-resume tests compare against.
REFERENCE_STEPS = 200
REFERENCE_CHECKPOINT_EVERY = 10


def write_idx(path: str, images: np.ndarray) -> None:
  header = struct.pack('>BBBB', 0, 0, 0x08, images.ndim) + struct.pack(
      f'>{images.ndim}I', *images.shape)
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + images.astype(np.uint8).tobytes())


def write_idx_dir(directory: str, num_train: int = 96, num_test: int = 40,
                  size: int = 16) -> str:
  """FashionMNIST-style IDX files of smooth random blobs (learnable, unlike pure noise)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(1234)
  yy, xx = np.mgrid[:size, :size]

  def images(num):
    centres = rng.uniform(3, size - 3, (num, 2, 1, 1))
    widths = rng.uniform(2, 5, (num, 1, 1))
    blobs = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / widths ** 2)
    return np.clip(blobs * 255 + rng.normal(0, 8, blobs.shape), 0, 255).astype(np.uint8)

  write_idx(os.path.join(directory, 'train-images-idx3-ubyte.gz'), images(num_train))
  write_idx(os.path.join(directory, 't10k-images-idx3-ubyte'), images(num_test))
  return directory


@pytest.fixture(scope='session')
def idx_dir(tmp_path_factory):
  return write_idx_dir(str(tmp_path_factory.mktemp('idx')))


@pytest.fixture
def tiny_config(idx_dir):
  from glow_ood.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.path = idx_dir
  return config


@pytest.fixture(autouse=True)
def fast_compiles():
  """Tiny models: compile time dominates, so skip most XLA optimisations."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def main_command(workdir: str, data_path: str, *overrides: str, mode: str = 'train'):
  return [sys.executable, '-m', 'glow_ood.main', f'--config={TINY_CONFIG}',
          f'--workdir={workdir}', f'--mode={mode}', f'--config.data.path={data_path}',
          *overrides]


def subprocess_env(devices: int = 1) -> dict:
  env = dict(os.environ)
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'True'
  env['JAX_PLATFORMS'] = 'cpu'
  # As tests/conftest.py: the loop emitters, which compile tiny programs faster.
  env['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                      '--xla_cpu_use_fusion_emitters=false')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
  return env


def start_main(workdir, data_path, *overrides, devices=1, log_path=None):
  log = open(log_path or os.path.join(os.path.dirname(workdir), 'log.txt'), 'wb')
  return subprocess.Popen(main_command(workdir, data_path, *overrides), cwd=REPO_ROOT,
                          env=subprocess_env(devices), stdout=log, stderr=subprocess.STDOUT)


def run_main(workdir, data_path, *overrides, devices=1, timeout=180):
  result = subprocess.run(main_command(workdir, data_path, *overrides), cwd=REPO_ROOT,
                          env=subprocess_env(devices), capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def committed_steps(workdir):
  """Checkpoint steps on disk (orbax renames a step directory into place once complete)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def kill_when(process, ready, *, timeout, waiting_for, log_path=None, poll_secs=0.05):
  """SIGKILLs a subprocess as soon as ready() holds; fails if it ends first or times out."""
  try:
    deadline = time.time() + timeout
    while not ready():
      assert process.poll() is None, (open(log_path).read()[-3000:] if log_path else
                                      f'the process ended before {waiting_for}')
      assert time.time() < deadline, f'no {waiting_for} within {timeout} s'
      time.sleep(poll_secs)
    process.send_signal(signal.SIGKILL)
    process.wait()
  finally:
    if process.poll() is None:
      process.kill()


def kill_after_first_checkpoint(process, workdir, log_path, timeout=240):
  """SIGKILLs a training subprocess as soon as its first checkpoint is complete."""
  kill_when(process, lambda: committed_steps(workdir), timeout=timeout,
            waiting_for='checkpoint', log_path=log_path)
  return committed_steps(workdir)


def reference_overrides(num_steps=REFERENCE_STEPS):
  return (f'--config.train.num_steps={num_steps}',
          f'--config.train.checkpoint_every={REFERENCE_CHECKPOINT_EVERY}',
          '--config.train.keep_checkpoints=100', '--config.train.log_every=50')


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory, idx_dir):
  """An uninterrupted single-device run of REFERENCE_STEPS steps (a subprocess)."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'workdir')
  run_main(workdir, idx_dir, *reference_overrides())
  return workdir


def load_checkpoint(config, workdir, step=None):
  """(host numpy TrainState, meta) of a run's checkpoint, restored on this process's devices."""
  from glow_ood import checkpointing, parallel, train_state  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  state, meta = checkpointing.restore_from_workdir(
      workdir, train_state.abstract_train_state(config, mesh), step)
  return parallel.to_host(state), meta


def max_abs_difference(tree_a, tree_b) -> float:
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       tree_a, tree_b)
  return max(jax.tree.leaves(diffs))
