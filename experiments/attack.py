"""Attack your own images: raise or lower their log p(x), or pull their bits/dim to a target.

  python experiments/attack.py --config=configs/fashion_mnist_quick.py --workdir=runs/fm_quick \
      --images=my_images.npz --objective=raise --epsilon=2 --output=runs/attacked

--images is an .npz with uint8 arrays 'test' (or --split), NHW or NHWC; images are
shaped like the model's data (e.g. 28x28 zero-padded to 32x32). Writes, in --output:
  attacked.npz  'test' = the attacked uint8 images, 'original', per-image
                bits_per_dim_before / _after, and the settings
  png/NNNNN.png each attacked image (the first --max_png), panels.png the first few
                originals, changes and attacked images side by side
Feed the attacked set back into the ordinary evaluation:
  python -m glow_ood.main --config=... --workdir=... --mode=evaluate \
      --add_eval=attacked=runs/attacked/attacked.npz --evals_only_added
which reproduces the bits/dim printed here (same noise key and batches). The best
iterate of each image is selected under another, independent noise key (recorded in
attacked.npz), so the printed numbers are not a maximum over the noise the selection saw.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    'config', None, 'The model\'s training config (configs/*.py); --config.<key>=<value> '
    'overrides fields, as for glow_ood.main.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoints.')
flags.DEFINE_integer('step', -1, 'Checkpoint step; -1 = config.eval.checkpoint_step (latest).')
flags.DEFINE_string('images', None, '.npz file of uint8 images.')
flags.DEFINE_string('split', 'test', 'Array of the .npz to read (test, train, ...).')
flags.DEFINE_integer('max_examples', 0, 'Attack the first N images; 0 = all.')
flags.DEFINE_enum('objective', 'raise', ['raise', 'lower', 'target'],
                  'raise / lower log p(x), or target: bits/dim toward --target_bits_per_dim.')
flags.DEFINE_float('target_bits_per_dim', None, 'Goal of --objective=target.')
flags.DEFINE_float('epsilon', 2.0, 'L-infinity radius in 8-bit levels (2 = 2/255).')
flags.DEFINE_integer('num_steps', 20, 'Signed-gradient steps.')
flags.DEFINE_integer('noise_draws', 2, 'Dequantization draws averaged per gradient step.')
flags.DEFINE_string('output', None, 'Output directory.')
flags.DEFINE_integer('max_png', 100, 'Attacked images written as PNG files.')
flags.mark_flags_as_required(['config', 'workdir', 'images', 'output'])
FLAGS = flags.FLAGS


def main(argv):
  from glow_ood.experiment.attack_command import attack_file  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.objective == 'target' and FLAGS.target_bits_per_dim is None:
    raise app.UsageError('--objective=target needs --target_bits_per_dim.')
  out = attack_file(FLAGS.config, FLAGS.workdir, FLAGS.images, FLAGS.output,
                    objective=FLAGS.objective, epsilon=FLAGS.epsilon,
                    num_steps=FLAGS.num_steps, noise_draws=FLAGS.noise_draws,
                    split=FLAGS.split, step=FLAGS.step, max_examples=FLAGS.max_examples,
                    target_bits_per_dim=FLAGS.target_bits_per_dim, max_png=FLAGS.max_png)
  print(f'{out["n"]} images, checkpoint step {out["step"]}, {FLAGS.objective} at epsilon '
        f'{FLAGS.epsilon:g}: mean bits/dim {out["bits_per_dim_before"]:.4f} -> '
        f'{out["bits_per_dim_after"]:.4f}')
  print(f'Wrote {out["npz"]} and {out["panels"]}; evaluate the attacked set with\n'
        f"  --mode=evaluate --add_eval=attacked={out['npz']} --evals_only_added",
        flush=True)


if __name__ == '__main__':
  app.run(main)
