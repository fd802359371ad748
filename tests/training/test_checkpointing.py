"""glow_ood.checkpointing in-process: round trips, retention, step choice, errors, atomicity,
checksums."""

import json
import logging
import os
import shutil

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glow_ood import checkpointing
from glow_ood import parallel
from glow_ood.train_state import TrainState
from glow_ood.user_errors import CheckpointRestoreError, CheckpointWriteError, NoCheckpointError
from tests.training.conftest import load_checkpoint

ORBAX_TMP_SUFFIX = '.orbax-checkpoint-tmp'


def _state(step: int, w_shape=(2, 3)) -> TrainState:
  """A TrainState of tiny arrays whose values depend on the step."""
  params = {'conv': {'kernel': jnp.arange(np.prod(w_shape), dtype=jnp.float32).reshape(w_shape)
                               + step,
                     'bias': jnp.full((3,), -step, jnp.float32)}}
  opt_state = optax.adam(1e-3).init(params)
  return TrainState(step=jnp.int32(step), params=params, opt_state=opt_state,
                    ema_params=jax.tree.map(lambda p: 0.5 * p, params))


def _abstract(state: TrainState) -> TrainState:
  sharding = parallel.replicated(parallel.make_mesh())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _save_steps(workdir: str, steps, keep=None) -> None:
  manager = checkpointing.make_manager(workdir, keep=keep)
  try:
    for step in steps:
      checkpointing.save(manager, _state(step), {'data_position': 10 * step,
                                                 'train_bits_per_dim': 3.5 - step / 100})
  finally:
    checkpointing.close(manager)


def _assert_state_equal(got: TrainState, want: TrainState) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(parallel.to_host(got)), jax.tree.leaves(parallel.to_host(want))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def _step_dirs(workdir: str) -> list[str]:
  return sorted(os.listdir(checkpointing.checkpoint_dir(workdir)))


def test_round_trip_of_state_and_metadata(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [7])
  state, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  _assert_state_equal(state, _state(7))
  # The step is recorded in the metadata by save itself.
  assert meta == {'data_position': 70, 'train_bits_per_dim': pytest.approx(3.43), 'step': 7}
  # Restored into the shardings asked for.
  replicated = parallel.replicated(parallel.make_mesh())
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
  assert os.path.isdir(os.path.join(checkpointing.checkpoint_dir(workdir), '7',
                                    checkpointing.STATE))


def test_keep_retains_the_newest(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2, 3, 4, 5], keep=2)
  assert checkpointing.available_steps(workdir) == [4, 5]
  assert _step_dirs(workdir) == ['4', '5']
  # Unlimited retention keeps all.
  _save_steps(str(tmp_path / 'all'), [1, 2, 3])
  assert checkpointing.available_steps(str(tmp_path / 'all')) == [1, 2, 3]


def test_latest_by_default_or_minus_one_and_a_chosen_step(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [2, 4, 6])
  abstract = _abstract(_state(0))
  for step in (None, -1):
    state, meta = checkpointing.restore_from_workdir(workdir, abstract, step)
    assert meta['step'] == 6 and int(state.step) == 6
    _assert_state_equal(state, _state(6))
  state, meta = checkpointing.restore_from_workdir(workdir, abstract, 4)
  assert meta['step'] == 4 and meta['data_position'] == 40
  _assert_state_equal(state, _state(4))
  with checkpointing.make_manager(workdir, read_only=True) as manager:
    assert manager.latest_step() == 6


def test_resume_writes_after_the_existing_steps(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2], keep=2)
  _save_steps(workdir, [3], keep=2)   # a second run on the same workdir
  assert checkpointing.available_steps(workdir) == [2, 3]


@pytest.mark.parametrize('step', [None, 5])
@pytest.mark.parametrize('layout', ['missing workdir', 'empty checkpoints dir'])
def test_no_checkpoint_says_to_train_first(tmp_path, layout, step):
  workdir = str(tmp_path / 'run')
  if layout == 'empty checkpoints dir':
    os.makedirs(checkpointing.checkpoint_dir(workdir))
  assert checkpointing.available_steps(workdir) == []
  with pytest.raises(NoCheckpointError) as info:
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), step)
  message = str(info.value)
  assert checkpointing.checkpoint_dir(workdir) in message
  assert 'Train first' in message and '--mode=train' in message
  # Reading must not create a workdir.
  assert os.path.exists(workdir) == (layout == 'empty checkpoints dir')


def test_missing_step_lists_the_available_ones(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [3, 9])
  with pytest.raises(NoCheckpointError) as info:
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), 5)
  message = str(info.value)
  assert 'No checkpoint for step 5' in message
  assert 'available steps: 3, 9' in message
  assert '--config.eval.checkpoint_step' in message and '-1 for the latest' in message


def _fake_unfinished_step(workdir: str, complete_step: int, step: int) -> str:
  """A temporary directory as a save killed before its rename leaves it: a copy of a
  complete step with part of it missing."""
  directory = checkpointing.checkpoint_dir(workdir)
  tmp = os.path.join(directory, f'{step}{ORBAX_TMP_SUFFIX}')
  shutil.copytree(os.path.join(directory, str(complete_step)), tmp)
  shutil.rmtree(os.path.join(tmp, checkpointing.META))
  return tmp


def test_unfinished_checkpoints_are_never_picked_up(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  tmp = _fake_unfinished_step(workdir, 2, 3)
  assert checkpointing.available_steps(workdir) == [1, 2]
  state, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  assert meta['step'] == 2
  _assert_state_equal(state, _state(2))
  with pytest.raises(NoCheckpointError, match='available steps: 1, 2'):
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), 3)
  assert os.path.isdir(tmp)   # read-only access leaves it alone
  # A writing manager (a resumed run) clears it away, and only it.
  _save_steps(workdir, [4])
  assert _step_dirs(workdir) == ['1', '2', '4']


def test_failed_save_leaves_no_step_and_keeps_the_complete_ones(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  manager = checkpointing.make_manager(workdir)
  # The state's tree metadata fails after its arrays are written: a half-written step.
  original = epath.Path.write_text

  def full_disk(self, *args, **kwargs):
    if self.name == '_METADATA' and any(p.startswith(checkpointing.STATE) for p in self.parts):
      raise OSError(28, 'No space left on device')
    return original(self, *args, **kwargs)
  monkeypatch.setattr(epath.Path, 'write_text', full_disk)
  with pytest.raises(CheckpointWriteError) as info:
    try:
      checkpointing.save(manager, _state(3), {'data_position': 30})
    finally:
      checkpointing.close(manager)
  monkeypatch.undo()
  message = str(info.value)
  assert 'No space left on device' in message
  assert 'steps 1, 2' in message and 'intact' in message
  assert 'rerun the same command to resume' in message
  assert checkpointing.available_steps(workdir) == [1, 2]
  assert '3' not in _step_dirs(workdir)
  state, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  assert meta['step'] == 2
  _assert_state_equal(state, _state(2))


def test_write_error_found_through_the_causes_orbax_wraps_it_in(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  manager = checkpointing.make_manager(workdir)

  def wrapped(*args, **kwargs):
    try:
      raise PermissionError(13, 'Permission denied')
    except PermissionError as error:
      raise RuntimeError('async save failed') from error
  monkeypatch.setattr(manager, 'save', wrapped)
  with pytest.raises(CheckpointWriteError, match='Permission denied.*No complete checkpoint'):
    checkpointing.save(manager, _state(1), {})
  # Errors without an OSError behind them are bugs: passed through unchanged.
  monkeypatch.setattr(manager, 'save', lambda *a, **k: (_ for _ in ()).throw(KeyError('x')))
  with pytest.raises(KeyError):
    checkpointing.save(manager, _state(1), {})
  manager.close()


def test_close_shuts_the_manager_even_when_waiting_fails(tmp_path, monkeypatch):
  manager = checkpointing.make_manager(str(tmp_path / 'run'))
  closed = []

  def failing_wait():
    raise OSError(5, 'Input/output error')
  monkeypatch.setattr(manager, 'wait_until_finished', failing_wait)
  monkeypatch.setattr(manager, 'close', lambda: closed.append(True))
  with pytest.raises(CheckpointWriteError, match='Input/output error'):
    checkpointing.close(manager)
  assert closed == [True]
  monkeypatch.undo()
  manager.close()


def test_a_checkpoint_of_other_shapes_is_refused_by_name(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1])
  with pytest.raises(CheckpointRestoreError) as info:
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0, w_shape=(3, 3))))
  message = str(info.value)
  assert 'params/conv/kernel: checkpoint (2, 3), config (3, 3)' in message
  assert 'Use the config it was trained with' in message


def _data_files(step_dir: str) -> list[str]:
  """The state's array files (not orbax's _METADATA and friends)."""
  return [os.path.join(root, name)
          for root, _, files in os.walk(os.path.join(step_dir, checkpointing.STATE))
          for name in files if not name.startswith('_')]


def _truncate_all(step_dir):
  for path in _data_files(step_dir):
    open(path, 'wb').close()


def _halve_biggest(step_dir):
  biggest = max(_data_files(step_dir), key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _delete_manifests(step_dir):
  for path in _data_files(step_dir):
    if path.endswith('manifest.ocdbt'):
      os.remove(path)


def _flip_a_bit(step_dir):
  """One bit flipped in the middle of the biggest array data file (OCDBT's data files of a
  process, state/ocdbt.process_<i>/d/...); its size unchanged."""
  arrays = [path for path in _data_files(step_dir)
            if 'ocdbt.process_' in path and f'{os.sep}d{os.sep}' in path]
  biggest = max(arrays, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))
  return os.path.relpath(biggest, step_dir)


def _step_dir(workdir, step):
  return os.path.join(checkpointing.checkpoint_dir(workdir), str(step))


def _remove_checksums(workdir, step):
  os.remove(os.path.join(_step_dir(workdir, step), checkpointing.CHECKSUMS))


@pytest.mark.parametrize('damage', [_truncate_all, _halve_biggest, _delete_manifests])
def test_a_damaged_checkpoint_names_the_older_one_to_go_back_to(tmp_path, damage):
  """Damage to a checkpoint written before checksums were kept: orbax's own failure."""
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  step_dir = os.path.join(checkpointing.checkpoint_dir(workdir), '2')
  _remove_checksums(workdir, 2)
  damage(step_dir)
  with pytest.raises(CheckpointRestoreError) as info:
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  message = str(info.value)
  # Damage, not a config mismatch: the advice is to fall back, not to change the config.
  assert 'cannot be read, it is damaged' in message, message
  assert 'does not fit the model' not in message
  assert 'tensorstore_spec' not in message   # the reason, not pages of JSON
  assert f'mv {step_dir} {step_dir}.damaged' in message
  assert 'step 1, the newest older checkpoint' in message
  # The older checkpoint is untouched and restores.
  _, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), 1)
  assert meta['step'] == 1


def test_every_step_is_saved_with_the_checksums_of_all_its_item_files(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  for step in (1, 2):
    step_dir = _step_dir(workdir, step)
    with open(os.path.join(step_dir, checkpointing.CHECKSUMS), encoding='utf-8') as f:
      record = json.load(f)
    assert record['step'] == step and record['algorithm'] == 'sha256'
    on_disk = {os.path.relpath(os.path.join(root, name), step_dir)
               for item in (checkpointing.STATE, checkpointing.META)
               for root, _, files in os.walk(os.path.join(step_dir, item)) for name in files}
    assert set(record['files']) == on_disk
    assert any(f'{os.sep}d{os.sep}' in name for name in on_disk)   # the array data
    assert checkpointing.differing_files(step_dir) == []


def test_untouched_checkpoint_restores_without_a_warning(tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  with caplog.at_level(logging.WARNING):
    state, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  assert meta['step'] == 2
  _assert_state_equal(state, _state(2))
  assert checkpointing.CHECKSUMS not in caplog.text


@pytest.mark.parametrize('damage', [_flip_a_bit, _truncate_all, _halve_biggest,
                                    _delete_manifests])
def test_files_that_differ_from_their_checksums_are_refused_naming_the_newest_intact_step(
    tmp_path, damage):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2, 3])
  step_dir = _step_dir(workdir, 3)
  flipped = damage(step_dir)
  before = sorted(os.listdir(step_dir))
  abstract = _abstract(_state(0))
  with pytest.raises(CheckpointRestoreError) as info:
    checkpointing.restore_from_workdir(workdir, abstract)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'Checkpoint step 3 ({step_dir}) is damaged: ')
  assert 'SHA-256 checksums' in message
  assert 'To go on from step 2, the newest intact checkpoint' in message
  assert f'mv {step_dir} {step_dir}.damaged' in message
  if flipped is not None:
    assert f'a file differs from the SHA-256 checksums written when it was saved ({flipped})' in (
        message)
  # A resumed run (a writing manager) refuses it the same way; nothing is changed.
  manager = checkpointing.make_manager(workdir)
  try:
    with pytest.raises(CheckpointRestoreError, match='go on from step 2, the newest intact'):
      checkpointing.restore(manager, abstract)
  finally:
    checkpointing.close(manager)
  assert sorted(os.listdir(step_dir)) == before
  assert checkpointing.available_steps(workdir) == [1, 2, 3]
  # The intact step restores.
  state, meta = checkpointing.restore_from_workdir(workdir, abstract, 2)
  assert meta['step'] == 2
  _assert_state_equal(state, _state(2))


def test_the_newest_intact_step_skips_damaged_and_unchecked_ones(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2, 3, 4])
  _flip_a_bit(_step_dir(workdir, 4))
  _flip_a_bit(_step_dir(workdir, 3))
  _remove_checksums(workdir, 2)

  def message(step=None):
    with pytest.raises(CheckpointRestoreError) as info:
      checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), step)
    return str(info.value)
  assert message().startswith('Checkpoint step 4 (')
  assert 'To go on from step 1, the newest intact checkpoint' in message()
  # Step 3 asked for: 4 is damaged too. Every step newer than 1 is to be moved aside.
  moves = '; '.join(f'mv {_step_dir(workdir, s)} {_step_dir(workdir, s)}.{suffix}'
                    for s, suffix in ((2, 'aside'), (3, 'damaged'), (4, 'damaged')))
  assert (f'To go on from step 1, the newest intact checkpoint, move the newer steps aside '
          f'({moves}) and rerun; to evaluate it, pass --config.eval.checkpoint_step=1.'
          in message(3))
  # None intact: the newest step without checksums is named as such.
  _flip_a_bit(_step_dir(workdir, 1))
  assert ('No other checkpoint is intact by its checksums. To go on from step 2, which has '
          'none to check it by' in message())
  assert 'step 2 has none to check it by: pass --config.eval.checkpoint_step=2' in message(1)
  # Nothing intact or unchecked left: start again.
  shutil.rmtree(_step_dir(workdir, 2))
  assert 'No other checkpoint is intact; to start again, move the damaged steps aside' in message()


def test_damaged_step_asked_for_by_evaluation_names_a_newer_intact_one(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2, 3])
  _flip_a_bit(_step_dir(workdir, 2))
  with pytest.raises(CheckpointRestoreError) as info:
    checkpointing.restore_from_workdir(workdir, _abstract(_state(0)), 2)
  message = str(info.value)
  assert message.startswith('Checkpoint step 2 (')
  assert 'Step 3 is the newest intact checkpoint: pass --config.eval.checkpoint_step=3' in message


def test_a_checkpoint_without_checksums_restores_with_a_warning(tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2])
  _remove_checksums(workdir, 2)   # as every checkpoint written before checksums were kept
  with caplog.at_level(logging.WARNING):
    state, meta = checkpointing.restore_from_workdir(workdir, _abstract(_state(0)))
  assert meta['step'] == 2
  _assert_state_equal(state, _state(2))
  warnings = [r.getMessage() for r in caplog.records if checkpointing.CHECKSUMS in r.getMessage()]
  assert len(warnings) == 1, caplog.text
  assert 'Checkpoint step 2' in warnings[0] and 'without checking its files' in warnings[0]


def test_rotation_deletes_the_checksums_with_their_steps(tmp_path):
  workdir = str(tmp_path / 'run')
  _save_steps(workdir, [1, 2, 3, 4, 5], keep=2)
  directory = checkpointing.checkpoint_dir(workdir)
  assert _step_dirs(workdir) == ['4', '5']   # nothing else: no checksum file left behind
  for step in (4, 5):
    assert checkpointing.differing_files(_step_dir(workdir, step)) == []
  leftovers = [os.path.join(root, name) for root, _, files in os.walk(directory)
               for name in files if name == checkpointing.CHECKSUMS]
  assert sorted(leftovers) == [os.path.join(_step_dir(workdir, s), checkpointing.CHECKSUMS)
                               for s in (4, 5)]


def test_a_trained_run_with_a_flipped_bit_is_refused_on_resume_and_evaluation(tiny_config,
                                                                             tmp_path):
  """The tiny training run of conftest.py (steps 4 and 8): the real model's arrays."""
  from glow_ood import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config, workdir)
  assert checkpointing.available_steps(workdir) == [4, 8]
  flipped = _flip_a_bit(_step_dir(workdir, 8))
  for attempt in (lambda: load_checkpoint(tiny_config, workdir),
                  lambda: train.train_and_evaluate(tiny_config, workdir)):
    with pytest.raises(CheckpointRestoreError) as info:
      attempt()
    message = str(info.value)
    assert message.startswith(f'Checkpoint step 8 ({_step_dir(workdir, 8)}) is damaged')
    assert flipped in message and 'To go on from step 4, the newest intact' in message
  _, meta = load_checkpoint(tiny_config, workdir, 4)
  assert meta['step'] == 4
