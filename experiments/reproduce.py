"""One command per pair of data sets: train Glow and CV-Glow, evaluate, analyse, report.

  python experiments/reproduce.py --pair=fashion_mnist_to_mnist --variant=quick \
      --workdir=runs/fm_mnist [--config.glow.train.num_steps=2000 ...]

or with the config file named directly (any variant after the colon):

  python experiments/reproduce.py --config=glow_ood/configs/pairs/cifar10_to_svhn.py:paper \
      --workdir=runs/cifar_svhn

Pairs: see glow_ood/configs/pairs/ (fashion_mnist_to_mnist, notmnist_to_mnist, cifar10_to_svhn,
celeb_a_to_svhn, imagenet32_to_cifar10_cifar100_svhn); variants: quick, paper, tiny.
Glow trains in WORKDIR/glow, CV-Glow in WORKDIR/cv_glow; a rerun resumes training,
reuses finished evaluations and rewrites WORKDIR/report.md.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from glow_ood import launch_flags
from glow_ood.experiment import command_line

flags.DEFINE_string('pair', command_line.DEFAULT_PAIR,
                    'Pair of data sets: the name of a file in glow_ood/configs/pairs/ (without .py).')
flags.DEFINE_string('variant', command_line.DEFAULT_VARIANT,
                    'quick | paper | tiny (passed to the pair config).')
config_flags.DEFINE_config_file(
    'config', None, 'Pair config file[:variant]; by default glow_ood/configs/pairs/<pair>.py:<variant>. '
    'Override any field with --config.<key>=<value>.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Output directory: glow/, cv_glow/, figures/, report.md.')
flags.DEFINE_integer('workers', 0,
                     "Run the models' chains (training to analysis) in this many processes at "
                     'once, each pinned to its own cores. 0 = one per usable core, at most one '
                     'per model, on a CPU-only host with --cpu_devices=0; else 1 (in turn, in '
                     'this process).')
flags.DEFINE_string('worker_model', None, 'Set by the command for its worker processes: run '
                    "only this model's chain.")
flags.DEFINE_enum('worker_task', 'chain', ['chain', 'samples'], 'Set by the command for its '
                  "worker processes: the model's chain (all but its sample grids) or its "
                  'sample grids.')
flags.DEFINE_string('worker_output', None, 'Set by the command for its worker processes: '
                    "where the worker leaves its chain's results.")
flags.DEFINE_string('worker_cores', None, 'Set by the command for its worker processes: the '
                    'cores the worker runs on (comma-separated).')
launch_flags.define("a model's")
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS
COMMAND_ARGV = []   # this command's arguments, which its worker processes repeat


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  plan = _workers_plan()
  launch_flags.apply_before_jax(FLAGS.config, FLAGS.workdir)
  from glow_ood import metrics  # pylint: disable=g-import-not-at-top
  from glow_ood.experiment import pipeline  # pylint: disable=g-import-not-at-top
  from glow_ood import user_errors  # pylint: disable=g-import-not-at-top
  metrics.quiet_checkpoint_logging()
  try:
    if FLAGS.on_damaged_checkpoint == 'fallback' and FLAGS.worker_model is None:
      from glow_ood.experiment import preflight  # pylint: disable=g-import-not-at-top
      preflight.set_aside_damaged(FLAGS.config, FLAGS.workdir,
                                  pipeline.check_pair_config(FLAGS.config))
    if FLAGS.worker_model is not None:
      pipeline.run_pair(FLAGS.config, FLAGS.workdir, worker_model=FLAGS.worker_model,
                        worker_task=FLAGS.worker_task, worker_output=FLAGS.worker_output)
      return
    pipeline.run_pair(FLAGS.config, FLAGS.workdir, workers_plan=plan)
  except Exception as error:  # pylint: disable=broad-except
    if FLAGS.debug:
      raise
    user_errors.exit_with_message(error, suffix=(
        ' Finished trainings and evaluations are kept: rerunning the same command goes on '
        'from them.' if user_errors.write_failure(error) is not None else ''))


def _workers_plan():
  """--workers: None (this process runs every model) or the workers' plan, decided before
  JAX starts: a parent of workers keeps one CPU device, its workers split their own cores."""
  from glow_ood import user_errors  # pylint: disable=g-import-not-at-top
  from glow_ood.experiment import eval_plan, workers  # pylint: disable=g-import-not-at-top
  if FLAGS.worker_model is not None:
    if FLAGS.worker_cores:
      try:
        workers.become_worker(FLAGS.worker_cores)
      except user_errors.ConfigError as error:
        user_errors.exit_with_message(error)
    return None
  try:
    plan = workers.plan(FLAGS.workers, eval_plan.models_of(FLAGS.config), COMMAND_ARGV,
                        cpu_devices=FLAGS.cpu_devices)
  except user_errors.ConfigError as error:
    user_errors.exit_with_message(error)
  if plan is not None:
    FLAGS.cpu_devices = 1
  return plan


def parse_flags(argv):
  """absl flag parsing; a bad flag or --config override ends with one line, not a traceback."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as error:
    if '--debug' in argv:
      raise
    from glow_ood import config_validation, user_errors  # pylint: disable=g-import-not-at-top
    try:
      loaded = FLAGS['config'].value
    except (KeyError, AttributeError):
      loaded = None
    message = command_line.unknown_override_message(argv, loaded)
    if message is None:
      text = str(error).replace('\\n', '\n')
      if 'Traceback (most recent call last)' in text:   # a config file that raised: its error
        head, _, trace = text.partition('Traceback (most recent call last)')
        text = head + [line for line in trace.splitlines() if line.strip()][-1].strip()
      detail = ' '.join(text.split())
      message = f'Bad flag or --config override: {detail}'
    user_errors.exit_with_message(config_validation.ConfigError(message))


if __name__ == '__main__':
  if '--debug' not in sys.argv:
    from glow_ood import quiet_exit  # pylint: disable=g-import-not-at-top
    quiet_exit.install()
  COMMAND_ARGV[:] = command_line.with_default_config(sys.argv, command_line.PAIRS_DIR)
  app.run(main, argv=list(COMMAND_ARGV), flags_parser=parse_flags)
