"""Entry point: flags only; the work happens in train, evaluate and sample.

  python -m glow_ood.main --config=configs/fashion_mnist_quick.py --workdir=/tmp/fm \
      [--config.train.num_steps=2000 ...] [--mode=train|evaluate|sample]
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from glow_ood import parallel

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py); override fields with '
    '--config.<block>.<key>=<value>.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events, '
                    'eval/*.npz and samples/*.png.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'sample'],
                  'train: train or resume to train.num_steps; evaluate: write per-example '
                  'eval files for eval.datasets; sample: write sample grids.')
flags.DEFINE_bool('multihost', None, 'Call jax.distributed.initialize() (one process per '
                  'host). Default: when the environment describes a multi-process job.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  parallel.initialize_distributed(FLAGS.multihost)
  # Imported after distributed init: nothing may touch a JAX backend before it.
  from glow_ood import evaluate, sample, train  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')  # input pipelines must not take accelerator memory
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())

  if FLAGS.mode == 'train':
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'evaluate':
    evaluate.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)
  else:
    for path in sample.write_samples(FLAGS.config, FLAGS.workdir):
      logging.info('Wrote %s', path)


if __name__ == '__main__':
  app.run(main)
