"""Orbax checkpoints under workdir/checkpoints/<step>/{state,meta,checksums.json}.

Orbax writes each step to a temporary directory and renames it when complete,
so a killed run leaves only whole checkpoints. Saves are asynchronous; call
`manager.wait_until_finished()` (or close the manager) before exiting.

Orbax keeps no checksums: a flipped byte in an array file restores silently and
shifts log p(x). So each save writes checksums.json, the SHA-256 of every file of
the step's items, into orbax's temporary directory once the files are final and
before orbax renames it into place: a step appears with its checksums, and orbax's
rotation deletes them with it. restore() checks them first.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint')  # before the imports it checks

import hashlib
import json
import os
import threading
import time
import weakref

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from glow_ood import atomic_files
from glow_ood import checkpoint_migration
from glow_ood import user_errors
from glow_ood.train_state import TrainState
from glow_ood.user_errors import CheckpointRestoreError, CheckpointWriteError, NoCheckpointError

STATE = 'state'
META = 'meta'   # JSON: step, data position, last train metrics
CHECKSUMS = 'checksums.json'   # in the step directory, beside STATE and META

# The items whose files are checksummed. Orbax's own _CHECKPOINT_METADATA beside them
# (timings, item handlers) is left out: it does not change what restores.
_CHECKSUMMED_ITEMS = (STATE, META)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


# What the checksums cover, and why files rather than the restored arrays' bytes: the
# files are what can rot on disk, and checking them needs no restore, so damage is
# found before orbax or TensorStore parse a manifest or a compressed chunk (which may
# fail in confusing ways or, worse, decode to other numbers), and the message can name
# the files. The arrays' bytes would depend on the restore target (its shardings, the
# earlier layouts converted on load) and would need a gather across processes.
# Checking reads the step's files once (a few hundred MB for the largest models,
# well under a second of SHA-256); writing them runs in orbax's background thread.


def _file_digests(step_dir: str) -> dict[str, str | None]:
  """{path relative to step_dir: SHA-256 hex digest, or None if unreadable} of every
  file under the step's checksummed items."""
  digests = {}
  for item in _CHECKSUMMED_ITEMS:
    for root, dirs, files in os.walk(os.path.join(step_dir, item)):
      dirs.sort()
      for name in sorted(files):
        path = os.path.join(root, name)
        try:
          with open(path, 'rb') as f:
            digest = hashlib.file_digest(f, 'sha256').hexdigest()
        except OSError:
          digest = None
        digests[os.path.relpath(path, step_dir)] = digest
  return digests


def write_checksums(step_dir: str, step: int) -> None:
  """Writes step_dir/checksums.json (atomically) for the step's files as they are now."""
  digests = _file_digests(step_dir)
  unreadable = sorted(name for name, digest in digests.items() if digest is None)
  if unreadable:
    raise OSError(f'cannot read {", ".join(unreadable)} in {step_dir} to checksum it')
  record = {'step': step, 'algorithm': 'sha256', 'files': digests}
  with atomic_files.atomic_write(os.path.join(step_dir, CHECKSUMS), 'w',
                                 encoding='utf-8') as f:
    json.dump(record, f, indent=1, sort_keys=True)


def differing_files(step_dir: str) -> list[str] | None:
  """The step's files that differ from its checksums (changed, missing, added or
  unreadable; [CHECKSUMS] if that file itself is unreadable); [] if all match; None if
  the step has no checksum file (written before checksums were kept)."""
  try:
    with open(os.path.join(step_dir, CHECKSUMS), encoding='utf-8') as f:
      recorded = json.load(f)['files']
    if not isinstance(recorded, dict):
      raise TypeError('files is not a mapping')
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError):
    return [CHECKSUMS]
  actual = _file_digests(step_dir)
  return sorted(name for name in set(recorded) | set(actual)
                if actual.get(name) is None or recorded.get(name) != actual[name])


class _ChecksumWriter:
  """Orbax's post-finalization callback: writes the checksums of the step that
  `save` announced into orbax's temporary directory.

  Orbax calls it in its background thread, on the primary process only, after all
  processes' files are written and finalized and before it renames the temporary
  directory into place, so the rename commits the step and its checksums together.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.step: int | None = None

  def __call__(self) -> None:
    step, self.step = self.step, None
    if step is None:   # a save made through the manager directly, not through save()
      return
    tmp = os.path.join(self.directory, f'{step}{ocp.path.step.TMP_DIR_SUFFIX}')
    if not os.path.isdir(tmp):
      raise RuntimeError(f'Orbax\'s temporary directory for step {step} is not {tmp}; '
                         'this orbax version lays its saves out differently.')
    write_checksums(tmp, step)


# manager -> its _ChecksumWriter (writing managers only).
_CHECKSUM_WRITERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_manager(workdir: str, *, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  directory = checkpoint_dir(workdir)
  writer = None if read_only else _ChecksumWriter(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      # A killed run can leave a partial tmp directory behind; never a partial step.
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=not read_only,
      async_options=(ocp.AsyncOptions(post_finalization_callback=writer)
                     if writer is not None else None))
  manager = ocp.CheckpointManager(directory, item_names=(STATE, META), options=options)
  if writer is not None:
    _CHECKSUM_WRITERS[manager] = writer
  return manager


def _os_error_in(error: BaseException) -> OSError | None:
  """The OSError behind `error`, following the chain of causes orbax wraps it in (or the
  full disk or quota that TensorStore reports as RESOURCE_EXHAUSTED)."""
  failure = user_errors.write_failure(error)
  if failure is not None:
    return failure
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
  """Finishes the save in flight and shuts orbax's background threads down, always; a failed
  save raises CheckpointWriteError once its threads have ended."""
  try:
    wait(manager)
    try:
      manager.close()
    except Exception as error:  # pylint: disable=broad-except
      raise _write_error(manager, error) from error
  except BaseException:
    _finish_background_work(manager)
    raise


def _finish_background_work(manager: ocp.CheckpointManager, timeout_s: float = 120.0) -> None:
  """After a failed save: closes the manager (orbax raises each stored error once, so this
  may take a few tries) and waits for the save's remaining writer threads. Left running,
  they reach the interpreter's shutdown and print tracebacks ('cannot schedule new
  futures', 'Event loop is closed') after the one-line message."""
  deadline = time.monotonic() + timeout_s
  for _ in range(8):
    try:
      manager.close()
      break
    except Exception:  # pylint: disable=broad-except
      continue
  try:
    from orbax.checkpoint._src.futures import future as ocp_future  # pylint: disable=g-import-not-at-top
    writer_thread = ocp_future._SignalingThread  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return
  for thread in threading.enumerate():
    if isinstance(thread, writer_thread) and thread.is_alive():
      # threading.Thread.join: the class's own join waits for orbax's signals instead.
      threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


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


def complete_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in workdir, oldest first, from the directory listing
  alone (no orbax manager: cheap, and safe before anything starts)."""
  return _complete_steps(checkpoint_dir(workdir))


def _step_problem(directory: str, steps: list[int], step: int | None) -> str | None:
  """restore's message for a workdir without checkpoints or without `step` (None: latest)."""
  if not steps:
    return (f'No checkpoint in {directory}. Train first: the same command with --mode=train '
            '(the default) writes one.')
  if step is not None and step not in steps:
    return (f'No checkpoint for step {step} in {directory}; available steps: '
            f'{", ".join(map(str, sorted(steps)))}. Pass one of them as '
            '--config.eval.checkpoint_step, or -1 for the latest.')
  return None


def check_step_exists(workdir: str, step: int | None) -> None:
  """Raises NoCheckpointError, before anything is built, where restore_from_workdir(workdir,
  step) would find no checkpoint (step None or -1: the latest)."""
  problem = _step_problem(checkpoint_dir(workdir), complete_steps(workdir),
                          None if step is None or step < 0 else step)
  if problem:
    raise NoCheckpointError(problem)


def _aside_name(path: str, suffix: str) -> str:
  aside, k = f'{path}.{suffix}', 1
  while os.path.exists(aside):
    k += 1
    aside = f'{path}.{suffix}{k}'
  return aside


def set_aside_damaged_steps(workdir: str, *, process_count: int = 1) -> str | None:
  """--on_damaged_checkpoint=fallback: renames the newest steps whose files differ from
  their checksums to <step>.damaged (never deleting anything), down to the newest intact
  step (or one without checksums), so that training and evaluation go on from it.

  Returns the one-line note to print, or None when the newest step is not damaged; raises
  CheckpointRestoreError (moving nothing) when no older step is left to go on from.
  """
  directory = checkpoint_dir(workdir)
  damaged, newest_usable = [], None
  for step in reversed(_complete_steps(directory)):
    differing = differing_files(os.path.join(directory, str(step)))
    if not differing:   # [] intact, None written without checksums: restore decides
      newest_usable = step
      break
    damaged.append((step, differing))
  if not damaged:
    return None
  if newest_usable is None or process_count > 1:
    why = ('no older checkpoint is usable' if newest_usable is None
           else 'it moves steps aside in single-process runs only')
    step, differing = damaged[0]
    raise CheckpointRestoreError(f'{_checksum_failure(directory, step, differing)} '
                                 f'(--on_damaged_checkpoint=fallback: {why}.)')
  moved = []
  for step, differing in damaged:
    where = os.path.join(directory, str(step))
    aside = _aside_name(where, 'damaged')
    os.rename(where, aside)
    count = f'{len(differing)} files differ' if len(differing) > 1 else 'a file differs'
    moved.append(f'step {step} ({count} from its checksums: {differing[0]}'
                 f'{", ..." if len(differing) > 1 else ""}) kept aside as {aside}')
  return (f'Damaged checkpoint {"; ".join(moved)}; going on from step {newest_usable}, the '
          'newest checkpoint not found damaged.')


def available_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in workdir, oldest first."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  with make_manager(workdir, read_only=True) as manager:
    return sorted(manager.all_steps())


def save(manager: ocp.CheckpointManager, state: TrainState, meta: dict) -> None:
  """Starts an asynchronous save of `state` at its own step (device-to-host copy is done on return)."""
  step = int(jax.device_get(state.step))
  writer = _CHECKSUM_WRITERS.get(manager)
  try:
    # Also raises the error of the previous asynchronous save, if it failed. (manager.save
    # waits for it too; waiting first keeps its checksum step from being overwritten.)
    manager.wait_until_finished()
    if writer is not None:
      writer.step = step
    manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        META: ocp.args.JsonSave(dict(meta, step=step)),
    }), force=True)
  except Exception as error:  # pylint: disable=broad-except
    if writer is not None:
      writer.step = None
    raise _write_error(manager, error) from error


def restore(manager: ocp.CheckpointManager, abstract_state: TrainState,
            step: int | None = None) -> tuple[TrainState, dict]:
  """Restores `step` (default: latest) into the shardings of `abstract_state`."""
  # Checked before the step: asking an empty workdir for step k needs the same advice.
  problem = _step_problem(str(manager.directory), list(manager.all_steps()), step)
  if problem:
    raise NoCheckpointError(problem)
  if step is None:
    step = manager.latest_step()
  _check_checksums(manager, step)
  # Checked against the stored shapes first: a failed orbax restore leaves its
  # background threads to print noise at exit.
  stored = _stored_shapes(manager, step)
  legacy = stored is not None and any(key[-2:] in (('lu', 'p'), ('lu', 'sign'))
                                      for key in stored if key[0] == 'params')
  unrolled = stored is not None and checkpoint_migration.has_unrolled_steps(stored)
  target = (checkpoint_migration.unrolled_abstract_state(abstract_state) if unrolled
            else abstract_state)
  target = checkpoint_migration.legacy_abstract_state(target) if legacy else target
  if stored is not None:
    _check_param_shapes(manager, step, stored, target)
  try:
    state, meta = _restore_step(manager, step, target)
  except Exception as error:  # pylint: disable=broad-except
    raise CheckpointRestoreError(_restore_failure(manager, step, error)) from None
  if legacy:
    state = checkpoint_migration.from_legacy_state(state)
    logging.warning('Checkpoint step %d in %s keeps the LU convs\' P and sign inside params '
                    '(the layout before the constants collection); converted on load. The '
                    'next save writes the new layout.', step, manager.directory)
  if unrolled:
    state = checkpoint_migration.from_unrolled_state(state)
    logging.warning('Checkpoint step %d in %s keeps one subtree per flow step (the layout '
                    'before the scanned steps); stacked per level on load. The next save '
                    'writes the new layout.', step, manager.directory)
  return state, meta


def _check_checksums(manager, step: int) -> None:
  """Raises CheckpointRestoreError if the step's files differ from its checksums; a step
  without checksums restores with a warning."""
  directory = str(manager.directory)
  where = os.path.join(directory, str(step))
  differing = differing_files(where)
  if differing is None:
    logging.warning('Checkpoint step %d in %s has no %s (written before checksums were '
                    'kept, or by orbax directly); restoring it without checking its files.',
                    step, directory, CHECKSUMS)
  elif differing:
    raise CheckpointRestoreError(_checksum_failure(directory, step, differing))


def _checksum_failure(directory: str, step: int, differing: list[str]) -> str:
  """The one-line message: the damaged step, its differing files, the newest intact step
  and the moves that make it the newest (training resumes from the newest step)."""
  where = os.path.join(directory, str(step))
  shown = ', '.join(differing[:3]) + (f' and {len(differing) - 3} more'
                                      if len(differing) > 3 else '')
  count = f'{len(differing)} files differ' if len(differing) > 1 else 'a file differs'
  damaged = (f'Checkpoint step {step} ({where}) is damaged: {count} from the SHA-256 '
             f'checksums written when it was saved ({shown}). Nothing was changed.')
  # Newest first, down to the newest intact step: None = no checksums, [] = intact.
  status = {step: differing}
  for other in reversed(_complete_steps(directory)):
    if other != step:
      status[other] = differing_files(os.path.join(directory, str(other)))
      if status[other] == []:  # pylint: disable=g-explicit-bool-comparison
        break
  intact = next((s for s, files in status.items() if files == []), None)
  unchecked = sorted((s for s, files in status.items() if files is None), reverse=True)

  def move_aside(target: int) -> str:
    """'move ... aside (mv ...)' for every step newer than target."""
    newer = sorted(s for s in status if s > target)
    moves = [f'mv {path} {path}.{"aside" if status[s] is None else "damaged"}'
             for s in newer[:3] for path in [os.path.join(directory, str(s))]]
    more = f'; and the {len(newer) - 3} other steps newer than {target}' if len(newer) > 3 else ''
    what = ('the damaged step' if newer == [step] else 'the damaged steps' if target < 0
            else 'the newer steps')
    return f'move {what} aside ({"; ".join(moves)}{more})'

  if intact is not None and intact < step:
    return (f'{damaged} To go on from step {intact}, the newest intact checkpoint, '
            f'{move_aside(intact)} and rerun; to evaluate it, pass '
            f'--config.eval.checkpoint_step={intact}. (--on_damaged_checkpoint=fallback makes '
            'these moves itself.)')
  if intact is not None:   # an older step was asked for
    return (f'{damaged} Step {intact} is the newest intact checkpoint: pass '
            f'--config.eval.checkpoint_step={intact}.')
  older_unchecked = [s for s in unchecked if s < step]
  if older_unchecked:
    target = older_unchecked[0]
    return (f'{damaged} No other checkpoint is intact by its checksums. To go on from step '
            f'{target}, which has none to check it by, {move_aside(target)} and rerun.')
  if unchecked:
    return (f'{damaged} No other checkpoint is intact by its checksums; step {unchecked[0]} '
            f'has none to check it by: pass --config.eval.checkpoint_step={unchecked[0]}.')
  return f'{damaged} No other checkpoint is intact; to start again, {move_aside(-1)}.'


# Orbax's words for a checkpoint whose tree or arrays differ from the requested ones.
_MISMATCH_WORDS = ('shape', 'tree structure', 'dtype')
# TensorStore's status codes for files that are unreadable or gone: damage, whatever
# else the message says.
_DAMAGE_CODES = ('DATA_LOSS', 'NOT_FOUND')


def _restore_failure(manager, step: int, error: Exception) -> str:
  lines = str(error).strip().splitlines()
  # TensorStore appends its JSON spec, which names a "dtype" and hides the reason.
  detail = lines[0].split(' [tensorstore_spec')[0] if lines else type(error).__name__
  # ... and for a damaged chunk, the repr of a bound method in place of the details.
  detail = detail.split(' See full TensorStore details')[0]
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
