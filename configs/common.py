"""Every config field with its default; experiment configs start from here."""
import ml_collections
from ml_collections import config_dict


def base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0                      # model init, dequantization noise, data order
  config.n_bits = 8                    # bits per pixel kept (1..8); 2**n_bits bins

  # Training data (glow_ood.data.DataSpec fields).
  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'
  config.data.source = 'auto'          # where to read it; see glow_ood.data
  config.data.path = config_dict.placeholder(str)      # file/dir for offline sources
  config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir
  config.data.image_size = 32          # pixels (square); divisible by 2**num_levels
  config.data.channels = 1
  config.data.augment = 'none'         # training only; evaluation never augments

  # glow_ood.flows.glow.Glow fields.
  config.model = ml_collections.ConfigDict()
  config.model.num_levels = 2          # L
  config.model.steps_per_level = 16    # K
  config.model.coupling = 'affine'     # 'affine' | 'additive' (CV-Glow)
  config.model.invconv = 'lu'          # 'lu' | 'plain'
  config.model.coupling_net = 'glow'   # 'glow' | 'highway'
  config.model.hidden_channels = 512   # channels in the coupling nets
  config.model.num_highway_blocks = 3
  config.model.learn_top_prior = True
  # Backward-pass activations: 'none' (kept), 'checkpoint' (jax.checkpoint per step;
  # saves nothing on XLA's CPU backend) or 'invertible' (rebuilt from each level's
  # output through the inverse: memory flat in K, ~1.5x the step time).
  config.model.recompute = 'none'
  config.model.dtype = 'float32'       # coupling nets' activations: 'float32' | 'bfloat16'

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32         # images per step, global (all devices/hosts)
  config.train.num_steps = 10_000      # optimizer steps
  config.train.optimizer = 'adam'      # 'adam' | 'adamax' | 'rmsprop'
  config.train.learning_rate = 1e-3    # peak, reached after warm-up
  config.train.warmup_steps = 0        # linear warm-up from 0, steps
  config.train.grad_clip_norm = 100.0  # global-norm clipping; 0 = off
  config.train.ema_decay = 0.0         # Polyak averaging of params; 0 = off
  # L2 regularisation: lambda * theta added to each trainable parameter's gradient
  # (a loss penalty lambda/2 |theta|^2, applied before the optimizer); 0 = off.
  config.train.weight_decay = 0.0
  # Fraction of training pixel values replaced by uniform random ones (0 = off); a
  # likelihood-ratio background model trains with 0.1-0.2 (glow_ood.scores.mutation).
  config.train.mutation_rate = 0.0
  config.train.log_every = 50          # steps between train metrics
  config.train.eval_every = 1_000      # steps between test bits/dim + samples; 0 = off
  config.train.eval_examples = 2_000   # test images for the periodic eval; 0 = all
  config.train.checkpoint_every = 1_000  # steps
  config.train.keep_checkpoints = 3    # newest N kept

  config.eval = ml_collections.ConfigDict()
  # Comma-separated 'name:split' entries, each optionally followed by
  # [key=value;key=value] overriding source, path, data_dir, max_examples,
  # batch_size, dequantization or tag (the output file prefix), e.g.
  # 'fashion_mnist:test,mnist:test[source=opencv_digits]'.
  config.eval.datasets = 'fashion_mnist:test'
  config.eval.batch_size = 256         # images per batch, global
  config.eval.max_examples = 0         # per data set; 0 = whole split
  config.eval.dequantization = 'uniform'  # 'uniform' (u~U[0,1)) | 'midpoint' (u=1/2)
  config.eval.checkpoint_step = -1     # -1 = latest
  config.eval.use_ema = True           # use EMA params when train.ema_decay > 0

  # OOD scores of --mode=evaluate (glow_ood.scoring): one file per set beside its
  # evaluation, eval/{tag}_{split}_step{S}_scores.npz.
  config.scores = ml_collections.ConfigDict()
  config.scores.enabled = True
  config.scores.fit_examples = 2_000       # training images the fitted scores see; 0 = all
  config.scores.reference_examples = 2_000  # test images each set is compared with; 0 = all
  config.scores.compressors = 'png,jpeg2000'  # input complexity, one score each
  # Likelihood ratio: workdir of a background model of the same architecture (trained
  # with train.mutation_rate > 0), e.g. a pair run's <model>_background; '' = off.
  config.scores.background_workdir = ''
  config.scores.ensemble_workdirs = ''     # WAIC: comma-separated workdirs, other seeds

  config.sample = ml_collections.ConfigDict()
  config.sample.temperatures = (0.7, 1.0)  # std multiplier of the priors
  config.sample.num = 64               # images per grid
  return config
