"""Orbax checkpoints under workdir/checkpoints/<step>/{state,meta}.

Orbax writes each step to a temporary directory and renames it when complete,
so a killed run leaves only whole checkpoints. Saves are asynchronous; call
`manager.wait_until_finished()` (or close the manager) before exiting.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint')  # before the imports it checks

import os

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from glow_ood import train_state as train_state_lib
from glow_ood.train_state import TrainState
from glow_ood.user_errors import CheckpointRestoreError, CheckpointWriteError, NoCheckpointError

STATE = 'state'
META = 'meta'   # JSON: step, data position, last train metrics


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def make_manager(workdir: str, *, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      # A killed run can leave a partial tmp directory behind; never a partial step.
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_names=(STATE, META),
                               options=options)


def _os_error_in(error: BaseException) -> OSError | None:
  """The OSError behind `error`, following the chain of causes orbax wraps it in."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous save in flight; a failed one raises CheckpointWriteError."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    raise _write_error(manager, error) from error


def close(manager: ocp.CheckpointManager) -> None:
  """Finishes the save in flight and shuts orbax's background threads down, always."""
  try:
    wait(manager)
  finally:
    manager.close()


def _write_error(manager: ocp.CheckpointManager, error: Exception) -> Exception:
  cause = _os_error_in(error)
  if cause is None:
    return error
  steps = _complete_steps(str(manager.directory))
  kept = (f'The complete checkpoints (steps {", ".join(map(str, steps))}) are intact.'
          if steps else 'No complete checkpoint had been written.')
  return CheckpointWriteError(
      f'Could not write a checkpoint in {manager.directory}: '
      f'{cause.strerror or cause}. {kept} Free disk space or fix the permissions (or use '
      'another --workdir), then rerun the same command to resume.')


def _complete_steps(directory: str) -> list[int]:
  """Step directories renamed into place (complete), without asking orbax."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def available_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in workdir, oldest first."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  with make_manager(workdir, read_only=True) as manager:
    return sorted(manager.all_steps())


def save(manager: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
  """Starts an asynchronous save of `state` at its own step (device-to-host copy is done on return)."""
  step = int(jax.device_get(state.step))
  try:
    # Also raises the error of the previous asynchronous save, if it failed.
    manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        META: ocp.args.JsonSave(dict(meta, step=step)),
    }), force=True)
  except Exception as error:  # pylint: disable=broad-except
    raise _write_error(manager, error) from error


def restore(manager: ocp.CheckpointManager, abstract_state: TrainState,
            step: int | None = None) -> tuple[TrainState, dict]:
  """Restores `step` (default: latest) into the shardings of `abstract_state`."""
  # Checked before the step: asking an empty workdir for step k needs the same advice.
  if not manager.all_steps():
    raise NoCheckpointError(
        f'No checkpoint in {manager.directory}. Train first: the same command with '
        '--mode=train (the default) writes one.')
  if step is None:
    step = manager.latest_step()
  if step not in manager.all_steps():
    raise NoCheckpointError(
        f'No checkpoint for step {step} in {manager.directory}; available steps: '
        f'{", ".join(map(str, sorted(manager.all_steps())))}. Pass one of them as '
        '--config.eval.checkpoint_step, or -1 for the latest.')
  # Checked against the stored shapes first: a failed orbax restore leaves its
  # background threads to print noise at exit.
  stored = _stored_shapes(manager, step)
  legacy = stored is not None and any(key[-2:] in (('lu', 'p'), ('lu', 'sign'))
                                      for key in stored if key[0] == 'params')
  unrolled = stored is not None and train_state_lib.has_unrolled_steps(stored)
  target = (train_state_lib.unrolled_abstract_state(abstract_state) if unrolled
            else abstract_state)
  target = train_state_lib.legacy_abstract_state(target) if legacy else target
  if stored is not None:
    _check_param_shapes(manager, step, stored, target)
  try:
    state, meta = _restore_step(manager, step, target)
  except Exception as error:  # pylint: disable=broad-except
    raise CheckpointRestoreError(_restore_failure(manager, step, error)) from None
  if legacy:
    state = train_state_lib.from_legacy_state(state)
    logging.warning('Checkpoint step %d in %s keeps the LU convs\' P and sign inside params '
                    '(the layout before the constants collection); converted on load. The '
                    'next save writes the new layout.', step, manager.directory)
  if unrolled:
    state = train_state_lib.from_unrolled_state(state)
    logging.warning('Checkpoint step %d in %s keeps one subtree per flow step (the layout '
                    'before the scanned steps); stacked per level on load. The next save '
                    'writes the new layout.', step, manager.directory)
  return state, meta


# Orbax's words for a checkpoint whose tree or arrays differ from the requested ones.
_MISMATCH_WORDS = ('shape', 'tree structure', 'dtype')
# TensorStore's status codes for files that are unreadable or gone: damage, whatever
# else the message says.
_DAMAGE_CODES = ('DATA_LOSS', 'NOT_FOUND')


def _restore_failure(manager, step: int, error: Exception) -> str:
  lines = str(error).strip().splitlines()
  # TensorStore appends its JSON spec, which names a "dtype" and hides the reason.
  detail = lines[0].split(' [tensorstore_spec')[0] if lines else type(error).__name__
  where = os.path.join(str(manager.directory), str(step))
  if (not detail.startswith(_DAMAGE_CODES)
      and any(word in detail.lower() for word in _MISMATCH_WORDS)):
    return (f'Checkpoint step {step} ({where}) does not fit the model of this config: '
            f'{detail}. Use the config it was trained with (leave out --config to use the '
            'one recorded in the workdir), or a new --workdir for this config.')
  older = [s for s in _complete_steps(str(manager.directory)) if s < step]
  fallback = (f'To go on from step {older[-1]}, the newest older checkpoint, move it aside '
              f'(mv {where} {where}.damaged) and rerun.' if older
              else 'There is no older checkpoint; move it aside to start again.')
  return (f'Checkpoint step {step} ({where}) cannot be read, it is damaged '
          f'({type(error).__name__}: {detail}). Nothing was changed. {fallback}')


def _stored_shapes(manager, step: int) -> dict[tuple[str, ...], tuple[int, ...]] | None:
  """{key path: global shape} of the stored state's arrays, from orbax's metadata; None
  if that cannot be read (the restore then says what is wrong)."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(epath.Path(str(manager.directory)) / str(step) / STATE)
    tree = getattr(tree, 'tree', tree)
    return {tuple(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
            if getattr(leaf, 'shape', None) is not None}
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    handler.close()


def _check_param_shapes(manager, step: int, stored: dict, target) -> None:
  """Raises CheckpointRestoreError naming the parameters whose shapes differ."""
  params = target['params'] if isinstance(target, dict) else target.params
  diffs = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    key = ('params',) + tuple(str(getattr(k, 'key', k)) for k in path)
    have = stored.get(key)
    if have != tuple(leaf.shape):
      diffs.append(f'{"/".join(key)}: checkpoint {have if have is not None else "absent"}, '
                   f'config {tuple(leaf.shape)}')
  extra = sorted(k for k in stored if k[0] == 'params' and k not in {
      ('params',) + tuple(str(getattr(p, 'key', p)) for p in path)
      for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]})
  diffs += [f'{"/".join(key)}: checkpoint {stored[key]}, config absent' for key in extra]
  if diffs:
    shown = '; '.join(diffs[:4]) + (f'; and {len(diffs) - 4} more' if len(diffs) > 4 else '')
    where = os.path.join(str(manager.directory), str(step))
    raise CheckpointRestoreError(
        f'Checkpoint step {step} ({where}) does not fit the model of this config: {shown}. '
        'Use the config it was trained with (leave out --config to use the one recorded in '
        'the workdir), or a new --workdir for this config.')


def _restore_step(manager, step: int, abstract_state) -> tuple[TrainState, dict]:
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract_state),
      META: ocp.args.JsonRestore(),
  }))
  return restored[STATE], restored[META]


def restore_from_workdir(workdir: str, abstract_state: TrainState,
                         step: int | None = None) -> tuple[TrainState, dict]:
  """Read-only restore for evaluation and sampling; step None or -1 = latest."""
  if step is not None and step < 0:
    step = None
  with make_manager(workdir, read_only=True) as manager:
    return restore(manager, abstract_state, step)
