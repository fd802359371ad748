"""Orbax checkpoints under workdir/checkpoints/<step>/{state,meta}.

Orbax writes each step to a temporary directory and renames it when complete,
so a killed run leaves only whole checkpoints. Saves are asynchronous; call
`manager.wait_until_finished()` (or close the manager) before exiting.
"""

import os

from absl import logging
import jax
import orbax.checkpoint as ocp

from glow_ood import train_state as train_state_lib
from glow_ood.train_state import TrainState

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


def available_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in workdir, oldest first."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  with make_manager(workdir, read_only=True) as manager:
    return sorted(manager.all_steps())


def save(manager: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
  """Starts an asynchronous save of `state` at its own step (device-to-host copy is done on return)."""
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state),
      META: ocp.args.JsonSave(dict(meta, step=step)),
  }), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state: TrainState,
            step: int | None = None) -> tuple[TrainState, dict]:
  """Restores `step` (default: latest) into the shardings of `abstract_state`."""
  if step is None:
    step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {manager.directory}.')
  if step not in manager.all_steps():
    raise FileNotFoundError(f'No checkpoint for step {step} in {manager.directory}; '
                            f'available steps: {sorted(manager.all_steps())}.')
  try:
    state, meta = _restore_step(manager, step, abstract_state)
  except Exception as error:  # pylint: disable=broad-except
    try:
      state, meta = _restore_step(manager, step,
                                  train_state_lib.legacy_abstract_state(abstract_state))
    except Exception:  # pylint: disable=broad-except
      raise CheckpointMismatchError(_mismatch_message(manager, step, error)) from error
    state = train_state_lib.from_legacy_state(state)
    if state.constants:
      logging.warning('Checkpoint step %d in %s keeps the LU convs\' P and sign inside params '
                      '(the layout before the constants collection); converted on load. The '
                      'next save writes the new layout.', step, manager.directory)
  return state, meta


class CheckpointMismatchError(ValueError):
  """A checkpoint whose arrays do not fit the model the config describes."""


def _mismatch_message(manager, step: int, error: Exception) -> str:
  detail = str(error).strip().splitlines()
  return (f'The checkpoint at step {step} in {manager.directory} does not fit the model of '
          f'this config ({detail[0] if detail else type(error).__name__}). Use the config it '
          'was trained with, or a new --workdir for this config.')


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
