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
launch_flags.define("a model's")
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  launch_flags.apply_before_jax(FLAGS.config, FLAGS.workdir)
  from glow_ood import metrics  # pylint: disable=g-import-not-at-top
  from glow_ood.experiment import pipeline  # pylint: disable=g-import-not-at-top
  from glow_ood import user_errors  # pylint: disable=g-import-not-at-top
  metrics.quiet_checkpoint_logging()
  try:
    if FLAGS.on_damaged_checkpoint == 'fallback':
      from glow_ood.experiment import preflight  # pylint: disable=g-import-not-at-top
      preflight.set_aside_damaged(FLAGS.config, FLAGS.workdir,
                                  pipeline.check_pair_config(FLAGS.config))
    pipeline.run_pair(FLAGS.config, FLAGS.workdir)
  except Exception as error:  # pylint: disable=broad-except
    if FLAGS.debug:
      raise
    user_errors.exit_with_message(error, suffix=(
        ' Finished trainings and evaluations are kept: rerunning the same command goes on '
        'from them.' if user_errors.write_failure(error) is not None else ''))


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
  app.run(main, argv=command_line.with_default_config(sys.argv, command_line.PAIRS_DIR),
          flags_parser=parse_flags)
