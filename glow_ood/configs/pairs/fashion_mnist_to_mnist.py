"""FashionMNIST -> MNIST (the paper's Figure 1, top; Figures 2, 4, 5, 6 and Section 5).

  python experiments/reproduce.py --pair=fashion_mnist_to_mnist --variant=quick \
      --workdir=runs/fm_mnist

Variants (get_config argument, or --variant):
  quick  small Glow/CV-Glow (L=2, K=8, 64 channels), PixelCNN++ and VAE trained for a
         few minutes each on 2 CPU cores, with tuned background flows; evaluated on
         2,000 train, 2,000 test FashionMNIST images (seeded subsets) and the 5,000
         offline MNIST digits. Everything, report included: 30 min on 2 idle cores.
  paper  the paper-size model of configs/fashion_mnist.py (L=2, K=16, 200-channel
         highway nets, RMSprop 5e-5, ~150 epochs): accelerator hardware.
  tiny   a seconds-long smoke run at 16x16.
Offline data: FashionMNIST IDX from dataset-fashion-mnist, MNIST digits from
opencv-doc (test split only); elsewhere MNIST comes through TFDS.
"""
from glow_ood.configs import fashion_mnist
from glow_ood.configs import fashion_mnist_quick
from glow_ood.configs.pairs import pair_base

PAIR = 'fashion_mnist_to_mnist'
OOD = (('mnist', 'test'),)  # (data set, split): its label is the name


def get_config(variant='quick'):
  if variant == 'paper':
    glow = fashion_mnist.get_config()
    glow.train.checkpoint_every = 10_000  # 29 checkpoints: Figure 5 spans the whole run
    return pair_base.make_pair_config(PAIR, variant, glow, OOD)

  glow = fashion_mnist_quick.get_config()
  if variant == 'tiny':
    return pair_base.tiny_experiment(
        pair_base.make_pair_config(PAIR, variant, pair_base.tiny_model(glow), OOD))

  glow.train.num_steps = 1_300          # 83k images per model, ~7 min at ~210 img/s on 2 CPU cores
  glow.train.checkpoint_every = 200     # seven points on the Figure 5 curves
  glow.train.eval_every = 0             # the experiment evaluates after training
  glow.train.log_every = 50
  config = pair_base.make_pair_config(PAIR, variant, glow, OOD)
  exp = config.experiment
  exp.train_examples = 2_000
  exp.test_examples = 2_000
  exp.ood_examples = 5_000              # all offline MNIST digits
  exp.curve_models = 'cv_glow'          # Figure 5 is about CV-Glow; Glow's curves cost time
  exp.curve_examples = 500
  exp.stats_examples = 0                # statistics of the evaluated subsets
  exp.hutchinson_probes = 32
  exp.sample_trace_examples = 128
  exp.graying_alphas = (0.0, 0.2, 0.4, 0.6, 0.8)
  exp.graying_examples = 500
  exp.corruption_examples = 500         # 45 corruption sets (15 x 3 severities)
  # Background candidates judged at 150 steps, not 300: on this pair the criterion ranked
  # mu 0.05 > 0.15 > 0.3 at 100, 150, 200 and 300 steps for both flows (docs/performance.md,
  # Run times), so the chosen background, trained on to 1,300 steps, is the same model.
  config.background.selection_steps = 150
  return config
