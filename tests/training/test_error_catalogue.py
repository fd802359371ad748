"""Every expected failure through the real entry points: one short message naming what
was wrong, a non-zero exit status, no traceback, and nothing already saved changed.

Most cases run the launcher in this process (glow_ood.main.run, flags reset each
time); those that need a process of their own (SIGKILL, orbax's shutdown at exit,
the experiment command) run as subprocesses. Each case starts from a copy of one
tiny trained workdir: checkpoints at steps 4 and 8, one evaluation file.
"""

import dataclasses
import errno
import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from typing import Callable

from absl import flags
import jax
import numpy as np
import pytest

from glow_ood import eval_sets
from glow_ood import evaluate
from glow_ood import main as main_lib
from glow_ood import metrics as metrics_lib
from glow_ood import train
from glow_ood import user_errors
from glow_ood import workdir_config
from glow_ood.experiment import model_runs
from tests.training.conftest import REPO_ROOT, TINY_CONFIG, kill_when, subprocess_env

NOISE = ('Traceback', 'Event loop is closed')


@pytest.fixture(scope='module')
def base_workdir(tmp_path_factory, idx_dir):
  """A finished tiny run (checkpoints 4 and 8, config recorded) with one evaluation file."""
  from glow_ood.configs import tiny  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_disable_most_optimizations', True)
  config = tiny.get_config()
  config.data.path = idx_dir
  workdir = str(tmp_path_factory.mktemp('base') / 'run')
  train.train_and_evaluate(config, workdir)
  evaluate.evaluate_checkpoint(config, workdir, eval_sets.resolve(config))
  return workdir


@dataclasses.dataclass
class Env:
  """What a case's setup may use: its own copy of the base run, a scratch dir, the data."""
  workdir: str
  scratch: str
  idx_dir: str
  monkeypatch: pytest.MonkeyPatch
  cleanups: list = dataclasses.field(default_factory=list)  # run after the case (unmounts)

  def train_args(self, *overrides):
    return [f'--config={TINY_CONFIG}', f'--workdir={self.workdir}',
            f'--config.data.path={self.idx_dir}', *overrides]

  def eval_args(self, *overrides):
    return self.train_args('--mode=evaluate', *overrides)


@dataclasses.dataclass
class Case:
  name: str
  setup: Callable[[Env], list]   # returns the command line after the program name
  status: int
  message: str                   # a substring the output must contain (the bad key/file/value)
  how: str = 'launcher'          # 'launcher' in process; 'subprocess'; 'experiment'
  check: Callable[[Env, str], None] | None = None  # further checks after the run
  # Where a file of the workdir is expected afterwards, when the case moves it aside
  # (relative path before -> after); the bytes must be the same there.
  moved: Callable[[str], str] | None = None


def _ckpt(env, step):
  return os.path.join(env.workdir, 'checkpoints', str(step))


def _files_under(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      yield os.path.join(root, name)


def _delete_a_file_of_newest(env):
  os.remove(max(_files_under(os.path.join(_ckpt(env, 8), 'state')), key=os.path.getsize))


def _truncate_a_file_of_newest(env):
  biggest = max(_files_under(os.path.join(_ckpt(env, 8), 'state')), key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _half_written_save(env):
  """What a save killed midway leaves: a partial copy under orbax's temporary name."""
  partial = _ckpt(env, 12) + '.orbax-checkpoint-tmp-1764000000000000'
  shutil.copytree(_ckpt(env, 8), partial)
  for path in list(_files_under(partial))[::2]:
    os.remove(path)


def _write_npz(path, array):
  np.savez(path, test=array)
  return path


def _interrupt_at_first_progress(env):
  update = metrics_lib.ProgressLine.update

  def update_then_interrupt(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return update(self, *args, **kwargs)
  env.monkeypatch.setattr(metrics_lib.ProgressLine, 'update', update_then_interrupt)


def _disk_full_on_checkpoint_write(env):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top

  async def no_space(self, x, directory):
    del self, x
    raise OSError(errno.ENOSPC, 'No space left on device', str(directory))
  env.monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', no_space)


def _disk_full_on_eval_write(env):
  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')
  env.monkeypatch.setattr(evaluate.np, 'savez', no_space)


def _assert_resumable_from(step):
  def check(env, output):
    del output
    assert os.path.isdir(_ckpt(env, step)), os.listdir(os.path.dirname(_ckpt(env, step)))
  return check


def _assert_complete_steps(env, steps):
  """No step directory but `steps` looks complete (a failed save left none behind)."""
  directory = os.path.join(env.workdir, 'checkpoints')
  assert sorted(int(n) for n in os.listdir(directory) if n.isdigit()) == steps


def _assert_eval_records_resize(env, output):
  path = os.path.join(env.workdir, 'eval', 'digits20_test_step8.npz')
  with np.load(path) as f:
    assert f['bits_per_dim'].shape == (6,)
    assert 'resized' in str(f['preprocessing']) and '20x20' in str(f['preprocessing'])
  assert 'resized' in output


def _assert_evaluated(env, output):
  del output
  assert os.path.exists(os.path.join(env.workdir, 'eval', 'fm_train_step8.npz'))


# Full disks. A real one is a small tmpfs mounted over the directory a run writes to
# (root only: elsewhere those cases skip, and the fake-error cases above them still run).


def _mount_tmpfs(env, directory, size):
  """Mounts an empty tmpfs of `size` at `directory`; unmounted after the case."""
  if os.geteuid() != 0 or shutil.which('mount') is None:
    pytest.skip('a real full disk needs a tmpfs, and mounting one needs root and mount(8)')
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', directory],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs at {directory} ({result.stderr.strip()}); a real full '
                'disk needs one')
  env.cleanups.append(lambda: subprocess.run(['umount', directory], check=False))


def _copy_into(source, directory):
  for name in os.listdir(source):
    path = os.path.join(source, name)
    if os.path.isdir(path):
      shutil.copytree(path, os.path.join(directory, name))
    else:
      shutil.copy2(path, directory)


def _fill(directory, leave=0):
  """Fills the file system of `directory` (a file 'filler'), then frees `leave` bytes."""
  path = os.path.join(directory, 'filler')
  descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(descriptor, bytes(65536))
  except OSError as error:
    if error.errno != errno.ENOSPC:
      raise
  finally:
    os.close(descriptor)
  if leave:
    os.truncate(path, max(0, os.path.getsize(path) - leave))


def _on_full_tmpfs(env, name, size):
  """workdir/<name> moved onto a tmpfs of `size`, its files copied back, then filled."""
  directory = os.path.join(env.workdir, name)
  on_disk = os.path.join(env.scratch, f'{name}_on_disk')
  shutil.move(directory, on_disk)
  os.makedirs(directory)
  _mount_tmpfs(env, directory, size)
  _copy_into(on_disk, directory)
  _fill(directory)


def _tensorboard_disk_full(env):
  """The workdir itself on a tmpfs with one free page (room for the first events, not for
  the next flushes), its checkpoints on a roomy tmpfs of their own."""
  on_disk = os.path.join(env.scratch, 'run_on_disk')
  shutil.move(env.workdir, on_disk)
  os.makedirs(env.workdir)
  _mount_tmpfs(env, env.workdir, '256k')
  for name in os.listdir(on_disk):
    if name != 'checkpoints' and not name.startswith('events.'):
      path = os.path.join(on_disk, name)
      (shutil.copytree if os.path.isdir(path) else shutil.copy2)(
          path, os.path.join(env.workdir, name))
  checkpoints = os.path.join(env.workdir, 'checkpoints')
  os.makedirs(checkpoints)
  _mount_tmpfs(env, checkpoints, '8m')
  _copy_into(os.path.join(on_disk, 'checkpoints'), checkpoints)
  _fill(env.workdir, leave=4096)


def _tensorstore_disk_full(env):
  """What TensorStore raises on a full disk: a ValueError whose text carries the errno."""
  from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top

  async def no_space(self, x, directory):
    del self, x
    raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{directory}/metadata": '
                     'Failed to write 72 bytes to file 5: No space left on device '
                     "[os_error_code='28']")
  env.monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', no_space)


class _FullDiskWriter:
  """A metric writer whose scalars fail as TensorFlow's event writer fails on a full disk."""

  def __init__(self, writer, workdir):
    self._writer, self._workdir = writer, workdir

  def __getattr__(self, name):
    return getattr(self._writer, name)

  def write_scalars(self, *args, **kwargs):
    del args, kwargs
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    raise tf.errors.ResourceExhaustedError(
        None, None, f'{self._workdir}/events.out.tfevents.1.host.1.v2; No space left on device'
        '\n\tFailed to flush 5 events')


def _tensorboard_disk_full_fake(env):
  make = metrics_lib.make_writer
  env.monkeypatch.setattr(metrics_lib, 'make_writer',
                          lambda workdir: _FullDiskWriter(make(workdir), workdir))


# Damaged checkpoints.


def _array_data_file(env, step):
  """An array data file of the step's state: the largest under its OCDBT root's d/."""
  return max(_files_under(os.path.join(_ckpt(env, step), 'state', 'd')), key=os.path.getsize)


def _flip_bytes(path, every=1):
  with open(path, 'r+b') as f:
    content = bytearray(f.read())
    for index in range(len(content) // 3, 2 * len(content) // 3, max(every, 1)):
      content[index] ^= 0x55
      if every == 0:
        break
    f.seek(0)
    f.write(content)


def _damage_array_data_without_checksums(env):
  """Step 8 as a version without checksums kept it, with its largest array file damaged."""
  os.remove(os.path.join(_ckpt(env, 8), 'checksums.json'))
  _flip_bytes(_array_data_file(env, 8), every=7)


def _assert_no_raw_detail(env, output):
  del env
  assert '<bound method' not in output and 'tensorstore_spec' not in output, output[-2000:]


def _aside_as_damaged(relative):
  prefix = os.path.join('checkpoints', '8') + os.sep
  return (os.path.join('checkpoints', '8.damaged') + os.sep + relative[len(prefix):]
          if relative.startswith(prefix) else relative)


def _assert_went_on_from_4(env, output):
  del output
  _assert_complete_steps(env, [4, 8, 12])
  assert os.path.isdir(_ckpt(env, 8) + '.damaged')


def _assert_evaluated_step_4(env, output):
  assert 'going on from step 4' in output
  assert os.path.exists(os.path.join(env.workdir, 'eval', 'fashion_mnist_test_step4.npz'))


# Small ones.


def _assert_nothing_written(path):
  def check(env, output):
    del output
    assert not os.path.exists(os.path.join(env.scratch, path)), os.listdir(env.scratch)
  return check


def _idx_without_test_split(env):
  directory = os.path.join(env.scratch, 'idx_train_only')
  os.makedirs(directory)
  shutil.copy2(os.path.join(env.idx_dir, 'train-images-idx3-ubyte.gz'), directory)
  return directory


def _npz_20x20(env):
  rng = np.random.default_rng(0)
  path = os.path.join(env.scratch, 'd20.npz')
  np.savez(path, train=rng.integers(0, 256, (24, 20, 20), dtype=np.uint8),
           test=rng.integers(0, 256, (8, 20, 20), dtype=np.uint8))
  return path


def _assert_training_preprocessing_recorded(env, output):
  assert 'Training images' in output
  with open(os.path.join(env.scratch, 'run', 'training_data.json')) as f:
    assert 'resized 20x20 -> 16x16' in f.read()


# The experiment command.


def _pair_config():
  from glow_ood.configs.pairs import fashion_mnist_to_mnist  # pylint: disable=g-import-not-at-top
  return fashion_mnist_to_mnist.get_config('tiny')


def _recorded_pair_workdir(env, name, model_config):
  """scratch/pair/<name> as an earlier run left it: the config it trained with recorded."""
  path = os.path.join(env.scratch, 'pair', name)
  workdir_config.prepare(path)
  workdir_config.record(model_config, path)
  return path


def _pair_args(env, *overrides):
  return ['--variant=tiny', f'--workdir={env.scratch}/pair', *overrides]


def _assert_pair_untouched(*recorded):
  """Nothing trained or created in the pair's workdir beyond the recorded configs."""
  def check(env, output):
    del output
    pair = os.path.join(env.scratch, 'pair')
    found = sorted(os.path.relpath(p, pair) for p in _files_under(pair)) if os.path.isdir(
        pair) else []
    assert found == sorted(os.path.join(n, 'config.json') for n in recorded), found
  return check


def _needs_offline_fashion_mnist():
  from glow_ood.data import errors as data_errors  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(data_errors.FASHION_MNIST_IDX_DIR):
    pytest.skip(f'needs the offline FashionMNIST in {data_errors.FASHION_MNIST_IDX_DIR} '
                '(its 60,000 training images against the batch size)')


CASES = [
    # Workdir against config.
    Case('resume-other-hidden-channels',
         lambda e: e.train_args('--config.model.hidden_channels=16', '--config.train.num_steps=12'),
         1, 'config.model.hidden_channels: recorded 8, requested 16'),
    Case('resume-other-optimizer', lambda e: e.train_args('--config.train.optimizer=rmsprop'),
         1, "config.train.optimizer: recorded 'adam', requested 'rmsprop'"),
    Case('resume-other-n-bits', lambda e: e.train_args('--config.n_bits=5'),
         1, 'config.n_bits: recorded 8, requested 5'),
    Case('resume-other-batch-size', lambda e: e.train_args('--config.train.batch_size=4'),
         1, 'config.train.batch_size: recorded 8, requested 4'),
    Case('resume-other-ema', lambda e: e.train_args('--config.train.ema_decay=0.9'),
         1, 'config.train.ema_decay: recorded 0.0, requested 0.9'),
    Case('resume-other-image-size', lambda e: e.train_args('--config.data.image_size=32'),
         1, 'config.data.image_size: recorded 16, requested 32'),
    Case('evaluate-other-model',
         lambda e: e.eval_args('--config.model.steps_per_level=3'),
         1, 'config.model.steps_per_level: recorded 2, requested 3'),
    Case('workdir-only-evaluate-other-model',
         lambda e: ['--workdir=' + e.workdir, '--mode=evaluate', '--config.model.coupling=additive'],
         1, "config.model.coupling: recorded 'affine', requested 'additive'"),
    Case('no-recorded-config-other-model',
         lambda e: (os.remove(os.path.join(e.workdir, 'config.json')),
                    e.train_args('--config.model.hidden_channels=16', '--config.train.num_steps=12'))[1],
         1, 'does not fit the model of this config', how='subprocess'),
    Case('recorded-config-unreadable',
         lambda e: (open(os.path.join(e.workdir, 'config.json'), 'w').write('{not json'),
                    ['--workdir=' + e.workdir, '--mode=evaluate'])[1],
         1, 'config.json cannot be read'),
    Case('workdir-only-without-recorded-config',
         lambda e: ['--workdir=' + e.scratch, '--mode=evaluate'],
         1, f'--config is needed'),
    # Workdir itself.
    Case('workdir-is-a-file',
         lambda e: (open(os.path.join(e.scratch, 'a_file'), 'w').close(),
                    e.train_args()[:1] + [f'--workdir={os.path.join(e.scratch, "a_file")}'])[1],
         1, 'a_file is a file, not a directory'),
    Case('workdir-inside-a-file',
         lambda e: (open(os.path.join(e.scratch, 'f'), 'w').close(),
                    [f'--config={TINY_CONFIG}', f'--workdir={os.path.join(e.scratch, "f", "run")}',
                     f'--config.data.path={e.idx_dir}'])[1],
         1, 'cannot be created'),
    # Checkpoints.
    Case('evaluate-without-checkpoint',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}', '--mode=evaluate',
                    f'--config.data.path={e.idx_dir}'],
         1, 'No checkpoint in'),
    Case('evaluate-missing-step', lambda e: e.eval_args('--config.eval.checkpoint_step=6'),
         1, 'No checkpoint for step 6'),
    Case('sample-missing-step',
         lambda e: ['--workdir=' + e.workdir, '--mode=sample', '--config.eval.checkpoint_step=5'],
         1, 'available steps: 4, 8'),
    Case('newest-checkpoint-file-deleted',
         lambda e: (_delete_a_file_of_newest(e), e.train_args('--config.train.num_steps=12'))[1],
         1, 'Checkpoint step 8'),
    Case('newest-checkpoint-file-truncated',
         lambda e: (_truncate_a_file_of_newest(e), e.eval_args())[1],
         1, 'go on from step 4'),
    Case('half-written-checkpoint-directory',
         lambda e: (_half_written_save(e), e.train_args('--config.train.num_steps=8'))[1],
         0, '', check=_assert_resumable_from(8)),
    # Config values.
    Case('unknown-override-key', lambda e: e.train_args('--config.train.lerning_rate=0.1'),
         1, "Unknown config key 'train.lerning_rate'"),
    Case('renamed-remat-key', lambda e: e.train_args('--config.model.remat=True'),
         1, 'use config.model.recompute'),
    Case('unknown-block', lambda e: e.train_args('--config.optim.lr=1'),
         1, 'no block config.optim'),
    Case('n-bits-out-of-range', lambda e: e.train_args('--config.n_bits=9'), 1, 'config.n_bits=9'),
    Case('unknown-eval-set',
         lambda e: e.eval_args('--config.evals.fashion_mnist_test.data.name=svhn'),
         1, "config.evals.fashion_mnist_test.data.name='svhn'"),
    Case('old-eval-datasets-key', lambda e: e.eval_args('--config.eval.datasets=mnist:test'),
         1, 'use config.evals'),
    Case('bad-add-eval-value', lambda e: e.eval_args('--add_eval=mnist'), 1, 'NAME:SPLIT'),
    Case('npz-under-another-name',
         lambda e: e.eval_args('--config.evals.fashion_mnist_test.data.name=mydigits',
                               '--config.evals.fashion_mnist_test.data.path=' + _write_npz(
                                   os.path.join(e.scratch, 'd.npz'),
                                   np.zeros((4, 16, 16), np.uint8))),
         1, '--add_eval=PATH.npz'),
    Case('bad-mode', lambda e: e.train_args('--mode=tune'), 1, '--mode=tune'),
    # Data.
    Case('missing-data-dir',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                    f'--config.data.path={e.scratch}/no_such_dir'],
         1, 'no_such_dir'),
    Case('npz-of-floats',
         lambda e: e.eval_args('--add_eval=' + _write_npz(
             os.path.join(e.scratch, 'floats.npz'), np.zeros((4, 16, 16), np.float32))),
         1, 'floats.npz:test has dtype float32'),
    Case('truncated-gzip-idx',
         lambda e: (shutil.copytree(e.idx_dir, os.path.join(e.scratch, 'idx')),
                    open(os.path.join(e.scratch, 'idx', 'train-images-idx3-ubyte.gz'), 'r+b').truncate(40),
                    [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                     f'--config.data.path={e.scratch}/idx'])[2],
         1, 'train-images-idx3-ubyte.gz'),
    # Faults during a run.
    Case('non-finite-loss',
         lambda e: e.train_args('--config.train.num_steps=12', '--config.train.learning_rate=1e30',
                                '--config.train.warmup_steps=0'),
         1, 'last good checkpoint (step 8)'),
    Case('sigint-during-training',
         lambda e: (_interrupt_at_first_progress(e), e.train_args('--config.train.num_steps=14'))[1],
         130, 'saved checkpoint step 10', check=_assert_resumable_from(10)),
    Case('disk-full-during-checkpoint-save',
         lambda e: (_disk_full_on_checkpoint_write(e),
                    e.train_args('--config.train.num_steps=12'))[1],
         1, 'No space left on device', check=lambda e, output: _assert_complete_steps(e, [4, 8])),
    Case('disk-full-writing-evaluation',
         lambda e: (_disk_full_on_eval_write(e),
                    e.eval_args('--add_eval=fashion_mnist:train'))[1],
         1, 'No space left on device'),
    # What works: evaluating from the workdir alone, and data fitted to the model, said so.
    Case('workdir-only-evaluate',
         lambda e: ['--workdir=' + e.workdir, '--mode=evaluate',
                    '--add_eval=fm_train=fashion_mnist:train', '--evals_only_added',
                    '--config.eval.max_examples=8'],
         0, 'fm_train', check=_assert_evaluated),
    Case('npz-20x20-resized-and-recorded',
         lambda e: ['--workdir=' + e.workdir, '--mode=evaluate',
                    '--add_eval=digits20_test=' + _write_npz(
                        os.path.join(e.scratch, 'd.npz'), np.full((6, 20, 20), 7, np.uint8))],
         0, 'resized', check=_assert_eval_records_resize),
    # The experiment command.
    Case('experiment-unknown-key',
         lambda e: ['--variant=tiny', f'--workdir={e.scratch}/pair', '--config.glow.train.lerning_rate=1'],
         1, "config.glow.train has no key 'lerning_rate'; its keys: batch_size",
         how='experiment'),
    Case('experiment-model-workdir-is-a-file',
         lambda e: (os.makedirs(f'{e.scratch}/pair'), open(f'{e.scratch}/pair/glow', 'w').close(),
                    ['--variant=tiny', f'--workdir={e.scratch}/pair'])[2],
         1, 'glow is a file, not a directory', how='experiment'),
    Case('experiment-workdir-is-a-file',
         lambda e: (open(f'{e.scratch}/pair', 'w').close(),
                    ['--variant=tiny', f'--workdir={e.scratch}/pair'])[1],
         1, 'pair is a file, not a directory', how='experiment'),
    # Resuming with nothing to train, and the step count.
    Case('resume-num-steps-reached', lambda e: e.train_args('--config.train.num_steps=8'),
         0, 'Nothing to train: ', check=lambda e, output: _assert_complete_steps(e, [4, 8])),
    Case('resume-num-steps-below-done', lambda e: e.train_args('--config.train.num_steps=4'),
         0, 'has checkpoint step 8 and config.train.num_steps=4. To train on, pass '
            '--config.train.num_steps=<more than 8>'),
    Case('num-steps-zero',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                    f'--config.data.path={e.idx_dir}', '--config.train.num_steps=0'],
         1, 'config.train.num_steps=0 is not valid: a run trains at least one step',
         check=_assert_nothing_written('run')),
    Case('resume-num-steps-zero', lambda e: e.train_args('--config.train.num_steps=0'),
         1, 'config.train.num_steps=0 is not valid'),
    # Data checked before any compute: presence, split, size.
    Case('batch-larger-than-training-set',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                    f'--config.data.path={e.idx_dir}', '--config.train.batch_size=128'],
         1, 'has only 96: lower config.train.batch_size to at most 96',
         check=_assert_nothing_written('run')),
    Case('periodic-evaluation-test-split-missing',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                    f'--config.data.path={_idx_without_test_split(e)}',
                    '--config.train.eval_every=4'],
         1, "config.data ('fashion_mnist', path=", check=_assert_nothing_written('run')),
    Case('eval-set-split-missing-offline',
         lambda e: e.eval_args('--add_eval=fashion_mnist:validation'),
         1, "config.evals.fashion_mnist_validation.data ('fashion_mnist', path="),
    Case('eval-npz-split-missing',
         lambda e: e.eval_args('--add_eval=' + _write_npz(os.path.join(e.scratch, 't.npz'),
                                                          np.zeros((4, 16, 16), np.uint8))
                               + ':train'),
         1, "has no array for split 'train'"),
    Case('eval-npz-file-missing',
         lambda e: e.eval_args(f'--add_eval={e.scratch}/absent.npz'), 1, 'npz file not found'),
    Case('scores-background-workdir-without-checkpoint',
         lambda e: e.eval_args(f'--config.scores.background_workdir={e.scratch}'),
         1, 'config.scores.background_workdir: no checkpoint in'),
    # Workdirs to read that are not one.
    Case('evaluate-workdir-is-a-file',
         lambda e: (open(os.path.join(e.scratch, 'f'), 'w').close(),
                    [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/f', '--mode=evaluate'])[1],
         1, 'f is a file, not a directory: pass the directory a training run wrote'),
    Case('sample-workdir-is-a-file',
         lambda e: (open(os.path.join(e.scratch, 'f'), 'w').close(),
                    [f'--workdir={e.scratch}/f', '--mode=sample'])[1],
         1, 'f is a file, not a directory: pass the directory a training run wrote'),
    Case('evaluate-workdir-missing',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/absent', '--mode=evaluate'],
         1, 'the directory does not exist', check=_assert_nothing_written('absent')),
    # Training's own preprocessing, printed and recorded like evaluation's.
    Case('training-images-resized-printed-and-recorded',
         lambda e: [f'--config={TINY_CONFIG}', f'--workdir={e.scratch}/run',
                    f'--config.data.path={_npz_20x20(e)}', '--config.train.num_steps=2',
                    '--config.train.checkpoint_every=2'],
         0, 'fitted to the model: resized 20x20 -> 16x16',
         check=_assert_training_preprocessing_recorded),
    # Full disks: as TensorStore and TensorFlow report them (fakes), and real ones.
    Case('disk-full-tensorstore-words-on-checkpoint',
         lambda e: (_tensorstore_disk_full(e), e.train_args('--config.train.num_steps=12'))[1],
         1, 'No space left on device', check=lambda e, output: _assert_complete_steps(e, [4, 8])),
    Case('disk-full-tensorflow-words-on-tensorboard',
         lambda e: (_tensorboard_disk_full_fake(e), e.train_args('--config.train.num_steps=12'))[1],
         1, 'events.out.tfevents.1.host.1.v2: No space left on device'),
    Case('disk-full-real-checkpoint-save',
         lambda e: (_on_full_tmpfs(e, 'checkpoints', '2m'),
                    e.train_args('--config.train.num_steps=12'))[1],
         1, 'Could not write a checkpoint', how='subprocess',
         check=lambda e, output: _assert_complete_steps(e, [4, 8])),
    Case('disk-full-real-evaluation-file',
         lambda e: (_on_full_tmpfs(e, 'eval', '1m'),
                    e.eval_args('--add_eval=fashion_mnist:train'))[1],
         1, 'No space left on device', how='subprocess'),
    Case('disk-full-real-tensorboard',
         lambda e: (_tensorboard_disk_full(e), e.train_args('--config.train.num_steps=40'))[1],
         1, 'No space left on device', how='subprocess'),
    # Damaged checkpoints.
    Case('damaged-array-data-without-checksums',
         lambda e: (_damage_array_data_without_checksums(e),
                    e.train_args('--config.train.num_steps=12'))[1],
         1, 'cannot be read, it is damaged', how='subprocess', check=_assert_no_raw_detail),
    Case('on-damaged-checkpoint-fallback-train',
         lambda e: (_flip_bytes(_array_data_file(e, 8), every=0),
                    e.train_args('--on_damaged_checkpoint=fallback',
                                 '--config.train.num_steps=12'))[1],
         0, 'kept aside as', moved=_aside_as_damaged, check=_assert_went_on_from_4),
    Case('on-damaged-checkpoint-fallback-evaluate',
         lambda e: (_flip_bytes(_array_data_file(e, 8), every=0),
                    e.eval_args('--on_damaged_checkpoint=fallback'))[1],
         0, 'kept aside as', moved=_aside_as_damaged, check=_assert_evaluated_step_4),
    # The experiment command: flags, and everything checked before the first step.
    Case('experiment-misspelt-variant', lambda e: _pair_args(e)[1:] + ['--variant=quik'],
         1, "Unknown --variant 'quik'; choose one of tiny, quick, paper", how='experiment'),
    Case('experiment-unknown-block',
         lambda e: _pair_args(e, '--config.glow.optim.lr=1'),
         1, "config.glow has no key 'optim'; its keys: data, eval, evals, model", how='experiment'),
    Case('experiment-override-conflicts-n-bits',
         lambda e: (_recorded_pair_workdir(e, 'glow', _pair_config().glow),
                    _pair_args(e, '--config.glow.n_bits=5'))[1],
         1, 'pair/glow was trained with other settings', how='experiment',
         check=_assert_pair_untouched('glow')),
    Case('experiment-override-conflicts-width',
         lambda e: (_recorded_pair_workdir(e, 'cv_glow', _pair_config().cv_glow),
                    _pair_args(e, '--config.cv_glow.model.hidden_channels=16'))[1],
         1, 'config.cv_glow.model.hidden_channels: recorded 8, requested 16', how='experiment',
         check=_assert_pair_untouched('cv_glow')),
    Case('experiment-override-conflicts-member',
         lambda e: (_recorded_pair_workdir(
             e, 'glow_seed1', model_runs.member_configs(_pair_config(), 'glow')['glow_seed1']),
                    _pair_args(e, '--config.glow.seed=5'))[1],
         1, 'config.glow.seed: recorded 1, requested 6 (the config of glow_seed1 follows '
            'config.glow)', how='experiment', check=_assert_pair_untouched('glow_seed1')),
    Case('experiment-ood-split-missing',
         lambda e: _pair_args(e, '--config.experiment.ood.mnist.data.path=' + _write_npz(
             os.path.join(e.scratch, 'm.npz'), np.zeros((4, 28, 28), np.uint8)),
                              '--config.experiment.ood.mnist.split=train'),
         1, "config.experiment.ood.mnist.data ('mnist', path=", how='experiment',
         check=_assert_pair_untouched()),
    Case('experiment-batch-larger-than-training-set',
         lambda e: (_needs_offline_fashion_mnist(),
                    _pair_args(e, '--config.vae.train.batch_size=65536'))[1],
         1, 'lower config.vae.train.batch_size to at most 60000', how='experiment',
         check=_assert_pair_untouched()),
]


def _snapshot(workdir):
  """sha256 of every checkpoint, evaluation and recorded-config file."""
  hashes = {}
  for path in _files_under(workdir):
    relative = os.path.relpath(path, workdir)
    if 'orbax-checkpoint-tmp' in relative:
      continue  # a half-written save: cleaning it up is fine
    if relative.startswith(('checkpoints', 'eval')) or relative == 'config.json':
      with open(path, 'rb') as f:
        hashes[relative] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def _reset_flags(monkeypatch):
  """A fresh flag state for the next in-process launch."""
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)  # config_flags defines one per override at each parse
  monkeypatch.setattr(sys, 'argv', list(sys.argv))  # the launcher sets it


def _run_launcher(argv, capfd, monkeypatch):
  _reset_flags(monkeypatch)
  with pytest.raises(SystemExit) as exited:
    main_lib.run(['glow_ood.main', *argv])
  captured = capfd.readouterr()
  return exited.value.code or 0, captured.out + captured.err


def _run_subprocess(program, argv):
  result = subprocess.run([sys.executable, *program, *argv], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)
  return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_expected_failure_gives_one_clear_message(case, base_workdir, idx_dir, tmp_path,
                                                  monkeypatch, capfd):
  workdir = str(tmp_path / 'run')
  shutil.copytree(base_workdir, workdir)
  scratch = str(tmp_path / 'scratch')
  os.makedirs(scratch)
  env = Env(workdir, scratch, idx_dir, monkeypatch)
  try:
    argv = case.setup(env)
    before = _snapshot(workdir)

    if case.how == 'launcher':
      status, output = _run_launcher(argv, capfd, monkeypatch)
    elif case.how == 'subprocess':
      status, output = _run_subprocess(['-m', 'glow_ood.main'], argv)
    else:
      status, output = _run_subprocess([os.path.join('experiments', 'reproduce.py')], argv)

    assert status == case.status, output[-3000:]
    assert case.message in output, output[-3000:]
    for noise in NOISE:
      assert noise not in output, output[-3000:]
    if status:   # a failure ends with its message, on one line
      assert case.message in output.rstrip().splitlines()[-1], output[-3000:]
    after = _snapshot(workdir)
    where = case.moved or (lambda path: path)
    changed = [path for path, digest in before.items() if after.get(where(path)) != digest]
    assert not changed, changed
    if case.check is not None:
      case.check(env, output)
  finally:
    for cleanup in reversed(env.cleanups):
      cleanup()


def test_catalogue_is_long_enough():
  assert len(CASES) >= 55


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch):
  workdir = tmp_path / 'a_file'
  workdir.write_text('')
  _reset_flags(monkeypatch)
  with pytest.raises(user_errors.WorkdirError, match='is a file, not a directory'):
    main_lib.run(['glow_ood.main', f'--config={TINY_CONFIG}', f'--workdir={workdir}', '--debug'])


def test_sigkill_during_evaluation_leaves_no_file_looking_complete(base_workdir, idx_dir,
                                                                    tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(base_workdir, workdir)
  before = _snapshot(workdir)
  sets = [f'--add_eval=t{i}_train=fashion_mnist:train' for i in range(6)]
  command = [sys.executable, '-m', 'glow_ood.main', f'--workdir={workdir}', '--mode=evaluate',
             '--config.eval.batch_size=8', '--evals_only_added', *sets]
  process = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  eval_dir = os.path.join(workdir, 'eval')
  kill_when(process, lambda: any(name.startswith('t') for name in os.listdir(eval_dir)),
            timeout=180, waiting_for='evaluation file', poll_secs=0.01)
  after = _snapshot(workdir)
  assert all(after[path] == digest for path, digest in before.items())
  for name in os.listdir(eval_dir):
    if name.startswith('.tmp_'):
      continue  # a temporary name: never read as a result
    with np.load(os.path.join(eval_dir, name)) as f:
      num = f['log_px'].shape[0]
      for key in ('log_px', 'log_p_discrete', 'bits_per_dim', 'log_pz', 'logdet_actnorm',
                  'logdet_invconv', 'logdet_coupling'):
        assert f[key].shape[0] == num, (name, key)
      assert int(f['step']) == 8
