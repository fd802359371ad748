"""Entry point: flags only; the work happens in train, evaluate and sample.

  python -m glow_ood.main --config=configs/fashion_mnist_quick.py --workdir=/tmp/fm \
      [--config.train.num_steps=2000 ...] [--mode=train|evaluate|sample]
  python -m glow_ood.main --workdir=/tmp/fm --mode=evaluate [--add_eval=mnist:test ...]

Without --config, the config recorded in the workdir (config.json) is used.
Expected failures (bad config, data, workdir or checkpoint, a non-finite loss, a
full disk) end with one line on stderr and exit status 1; --debug shows the
traceback instead.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'absl')  # before the imports it checks

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from glow_ood import argv as argv_lib
from glow_ood import config_validation
from glow_ood import launch_flags
from glow_ood import parallel
from glow_ood import user_errors
from glow_ood import workdir_config

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py); override fields with '
    '--config.<block>.<key>=<value>.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events, '
                    'eval/*.npz and samples/*.png.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'sample'],
                  'train: train or resume to train.num_steps; evaluate: write per-example '
                  'eval files for eval.datasets; sample: write sample grids.')
flags.DEFINE_multi_string(
    'add_eval', [], "Adds an evaluation set to config.evals for --mode=evaluate: 'NAME:SPLIT' "
    "(e.g. mnist:test) or the path of an .npz file ('PATH.npz[:SPLIT]'), optionally "
    "'KEY=' in front to name its files eval/KEY_step<S>.npz. Repeat for more sets.")
flags.DEFINE_bool('evals_only_added', False, 'With --add_eval: evaluate only the added sets, '
                  'not those of config.evals.')
flags.DEFINE_bool('multihost', None, 'Call jax.distributed.initialize() (one process per '
                  'host). Default: when the environment describes a multi-process job.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for --multihost '
                    'where it is not detected (not needed on Cloud TPU, SLURM, Open MPI).')
flags.DEFINE_integer('num_processes', None, 'Process count, for --multihost where not detected.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1, where not detected.')
launch_flags.define('the')
flags.mark_flags_as_required(['workdir'])


def unknown_override_message(argv, config=None) -> str | None:
  """Names the first --config.<key> override that is not in the config schema, if any."""
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    renamed = config_validation.RENAMED_KEYS.get('.'.join(path[:2]))
    if renamed:
      return f'config.{".".join(path)} in {arg} has been replaced: use {renamed}.'
    if path[0] == 'evals':
      continue  # blocks whose keys the config file decides; the config check names them
    block = path[0] if len(path) > 1 else ''
    key = path[-1]
    known = config_validation.known_keys(config, block)
    if known is None:
      blocks = [b for b in config_validation.TOP_KEYS if b not in ('seed', 'n_bits')]
      return (f'Unknown config key {".".join(path)!r} in {arg}: there is no block '
              f'config.{block}; blocks: {", ".join(blocks)}.')
    if len(path) > 2 or key not in known:
      return (f'Unknown config key {".".join(path)!r} in {arg}; known keys in '
              f'config.{block or "<top>"}: {", ".join(known)}.')
  return None


def with_recorded_config(argv) -> list[str]:
  """argv, with --config pointing at the workdir's recorded config when it is left out."""
  if argv_lib.flag_value(argv, 'config') is not None:
    return list(argv)
  workdir = argv_lib.flag_value(argv, 'workdir')
  if workdir is None:
    return list(argv)  # absl reports the missing --workdir
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise _a_file_error(workdir)
  if not os.path.isfile(workdir_config.config_path(workdir)):
    raise config_validation.ConfigError(
        f'--config is needed: {workdir} has no recorded config '
        f'({workdir_config.CONFIG_FILE}, written when training starts). Pass '
        '--config=configs/<name>.py.')
  workdir_config.load(workdir)  # an unreadable record fails here, with its own message
  return argv_lib.with_config(argv, f'{workdir_config.__file__}:{workdir}')


def _loaded_config():
  """The config file's config, if absl got as far as loading it."""
  try:
    return FLAGS['config'].value
  except (KeyError, AttributeError):
    return None


def _with_added_evals(config):
  """config with the --add_eval sets added to (or, with --evals_only_added, replacing) its evals."""
  if not FLAGS.add_eval:
    return config
  from glow_ood import eval_sets  # pylint: disable=g-import-not-at-top
  with config.unlocked():
    if FLAGS.evals_only_added:
      config.evals = type(config.evals)()
    for text in FLAGS.add_eval:
      try:
        key, block = eval_sets.parse_add_eval(text)
      except ValueError as error:
        raise config_validation.ConfigError(str(error)) from None
      config.evals[key] = block
  return config


def parse_flags(argv):
  """absl flag parsing, with one clear message for a bad --config, override or workdir."""
  try:
    argv = with_recorded_config(argv)
    sys.argv = argv  # config_flags reads the --config.<key> overrides from sys.argv
    try:
      return FLAGS(argv)
    except (AttributeError, KeyError):
      message = unknown_override_message(argv, _loaded_config())
      if message is None:
        raise
      raise config_validation.ConfigError(message) from None
  except flags.Error as error:
    if '--debug' in argv:
      raise
    user_errors.exit_with_message(config_validation.ConfigError(str(error)))
  except Exception as error:  # pylint: disable=broad-except
    if '--debug' in argv:
      raise
    user_errors.exit_with_message(error)


def _a_file_error(workdir: str) -> user_errors.WorkdirError:
  return user_errors.WorkdirError(
      f'--workdir={workdir} is a file, not a directory: pass the directory a training run '
      'wrote (it holds checkpoints/ and config.json).')


def _check_workdir_for_reading(workdir: str) -> None:
  """--mode=evaluate/sample: the workdir must be an existing directory."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise _a_file_error(workdir)
  if not os.path.exists(workdir):
    raise user_errors.NoCheckpointError(
        f'No checkpoint in {workdir}: the directory does not exist. Check --workdir, or train '
        'first (the same command with --mode=train, the default).')


def _before_compute(config, mode: str, workdir: str, device_count: int, process_count: int):
  """Everything that can be checked before a step runs or a checkpoint is restored: the
  config, the workdir, its checkpoints, the data every set needs (presence, split, size).
  Returns the evaluation sets for --mode=evaluate; None where there is nothing to do."""
  from glow_ood import checkpointing  # pylint: disable=g-import-not-at-top
  sets = config_validation.validate_config(config, device_count=device_count)
  if mode == 'train':
    workdir_config.check_usable(workdir)
    workdir_config.check_resume(config, workdir)
  else:
    _check_workdir_for_reading(workdir)
    workdir_config.check_restore(config, workdir)
  if FLAGS.on_damaged_checkpoint == 'fallback' and (
      mode == 'train' or config.eval.checkpoint_step < 0):
    note = checkpointing.set_aside_damaged_steps(workdir, process_count=process_count)
    if note:
      print(note, file=sys.stderr, flush=True)
  if mode == 'train':
    steps = checkpointing.complete_steps(workdir)
    if steps and steps[-1] >= config.train.num_steps:
      print(f'Nothing to train: {workdir} has checkpoint step {steps[-1]} and '
            f'config.train.num_steps={config.train.num_steps}. To train on, pass '
            f'--config.train.num_steps=<more than {steps[-1]}>; to evaluate it, '
            '--mode=evaluate.', file=sys.stderr, flush=True)
      return None
    config_validation.check_training_data(config, process_count=process_count)
    return sets
  checkpointing.check_step_exists(workdir, config.eval.checkpoint_step)
  if mode == 'evaluate':
    config_validation.check_eval_data(sets, lambda s: f'evals.{s.key}.data')
    if config.scores.enabled:   # the scores are fitted on the training data's splits
      spec = config_validation.spec_lib.DataSpec(**dict(config.data, augment='none'))
      for split in ('train', 'test'):
        config_validation.check_available(spec, split, 'data')
      for key in ('background_workdir', 'ensemble_workdirs'):
        for other in [w.strip() for w in config.scores[key].split(',') if w.strip()]:
          if not checkpointing.complete_steps(other):
            raise user_errors.NoCheckpointError(
                f'config.scores.{key}: no checkpoint in {other}. Train that model first, or '
                f'set --config.scores.{key}= to leave its score out.')
          workdir_config.check_restore(config, other)
  return sets


def _resume_note(mode: str, workdir: str) -> str:
  """After a failed write while training: where a rerun goes on from."""
  if mode != 'train':
    return ''
  from glow_ood import checkpointing  # pylint: disable=g-import-not-at-top
  steps = checkpointing.complete_steps(workdir)
  if not steps:
    return ' No checkpoint had been written.'
  return (f' The checkpoints up to step {steps[-1]} in {checkpointing.checkpoint_dir(workdir)} '
          'are intact: rerunning the same command resumes from there.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  launch_flags.apply_before_jax(FLAGS.config, FLAGS.workdir)
  parallel.initialize_distributed(FLAGS.multihost,
                                  coordinator_address=FLAGS.coordinator_address,
                                  num_processes=FLAGS.num_processes,
                                  process_id=FLAGS.process_id)
  # Imported after distributed init: nothing may touch a JAX backend before it.
  from glow_ood import metrics, sample, score_files, train  # pylint: disable=g-import-not-at-top
  metrics.quiet_checkpoint_logging()
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')  # input pipelines must not take accelerator memory
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())

  try:
    config = _with_added_evals(FLAGS.config)
    sets = _before_compute(config, FLAGS.mode, FLAGS.workdir, jax.device_count(),
                           jax.process_count())
    if sets is None:
      return
    if FLAGS.mode == 'train':
      train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == 'evaluate':
      score_files.evaluate_and_score(config, FLAGS.workdir, sets)
    else:
      for path in sample.write_samples(config, FLAGS.workdir):
        logging.info('Wrote %s', path)
  except Exception as error:  # pylint: disable=broad-except
    if FLAGS.debug:
      raise
    user_errors.exit_with_message(error, suffix=_resume_note(FLAGS.mode, FLAGS.workdir)
                                  if user_errors.write_failure(error) is not None
                                  and not isinstance(error, user_errors.CheckpointWriteError)
                                  else '')


def run(argv=None) -> None:
  """The command line entry point (argv default: sys.argv)."""
  app.run(main, argv=argv if argv is not None else sys.argv, flags_parser=parse_flags)


if __name__ == '__main__':
  if '--debug' not in sys.argv:
    from glow_ood import quiet_exit  # pylint: disable=g-import-not-at-top
    quiet_exit.install()
  run()
