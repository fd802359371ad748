"""CIFAR-10 -> SVHN (the paper's Figure 1, bottom, and Section 5's closed form), through TFDS.

  python experiments/reproduce.py --pair=cifar10_to_svhn --variant=paper --workdir=runs/cifar_svhn

Variants:
  paper  configs/cifar10.py: L=3, K=8, 400-channel highway nets, RMSprop 1e-5, batch 32.
  quick  L=3, K=8, 128-channel Glow nets with Adam for 20k steps: an hour-scale
         accelerator run that already shows the effect.
  tiny   a seconds-long smoke run at 16x16 (tests use it under tfds.testing.mock_data).
"""
from glow_ood.configs import cifar10
from glow_ood.configs.pairs import pair_base

PAIR = 'cifar10_to_svhn'
OOD = (('svhn_cropped', 'test'),)  # (data set, split): its label is the name


def colour_glow(variant):
  """The CIFAR-10-style RGB Glow shared by the colour pairs, at a variant's size."""
  glow = cifar10.get_config()
  if variant == 'tiny':
    return pair_base.tiny_model(glow)
  if variant == 'quick':
    glow.model.coupling_net = 'glow'
    glow.model.hidden_channels = 128
    glow.train.batch_size = 64
    glow.train.num_steps = 20_000
    glow.train.optimizer = 'adam'
    glow.train.learning_rate = 5e-4
    glow.train.warmup_steps = 500
    glow.train.checkpoint_every = 2_000
    glow.train.eval_every = 5_000
  else:
    glow.train.checkpoint_every = 25_000
    glow.train.eval_every = 25_000
  return glow


def finish(config, variant):
  """Experiment sizes per variant, shared by the colour pairs."""
  if variant == 'tiny':
    return pair_base.tiny_experiment(config)
  exp = config.experiment
  if variant == 'quick':
    exp.train_examples = 10_000
    exp.curve_examples = 1_000
    exp.hutchinson_probes = 64
    exp.sample_trace_examples = 500
    # The mutation-rate candidates train past the 500-step warm-up before the selection.
    config.background.selection_steps = 2_000
  return config


def get_config(variant='paper'):
  config = pair_base.make_pair_config(PAIR, variant, colour_glow(variant), OOD)
  return finish(config, variant)
