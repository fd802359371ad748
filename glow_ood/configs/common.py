"""Every config field with its default; experiment configs start from here."""
import ml_collections
from ml_collections import config_dict

from glow_ood import model_kinds
from glow_ood.eval_sets import eval_block


def model_block(kind: str) -> ml_collections.ConfigDict:
  """config.model for a model kind: `kind` and every field of its module, at its default."""
  spec = model_kinds.KINDS[kind]
  block = ml_collections.ConfigDict({'kind': kind})
  for name, default in spec.defaults().items():
    # A None default keeps its type, so --config.model.<name>=<value> can set it.
    block[name] = (config_dict.placeholder(spec.field_type(name)) if default is None
                   else default)
  return block


def with_model(config: ml_collections.ConfigDict, kind: str, size: str, sizes: dict,
               train: dict) -> ml_collections.ConfigDict:
  """`config` (any training config) with a `kind` model of `size` (its fields in `sizes`)
  and that size's training settings (`train`; a size it lacks keeps the config's own)."""
  config.model = model_block(kind)
  config.model.update(sizes[size])
  config.train.update(train.get(size, {}))
  return config


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

  # The model: config.model.kind and that kind's module fields, with the module's
  # defaults (glow_ood.model_kinds; Glow's fields are documented in glow_ood.flows.glow).
  config.model = model_block('glow')
  config.model.num_levels = 2          # L
  config.model.steps_per_level = 16    # K

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
  # Steps of one jax.profiler trace, taken from step 10 on, into workdir/plugins/profile
  # (TensorBoard's profile tab, or Perfetto); 0 = off.
  config.train.profile_steps = 0

  # Defaults of every evaluation set.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256         # images per batch, global
  config.eval.max_examples = 0         # per data set; 0 = whole split
  # Which images: a permutation of the whole split drawn from this seed, first
  # max_examples of it (stored orders are often sorted, e.g. digits by class).
  config.eval.subset_seed = 0
  config.eval.dequantization = 'uniform'  # 'uniform' (u~U[0,1)) | 'midpoint' (u=1/2)
  config.eval.checkpoint_step = -1     # -1 = latest
  config.eval.use_ema = True           # use EMA params when train.ema_decay > 0

  # What --mode=evaluate evaluates: one block per set, keyed by its file name
  # (eval/<key>_step<S>.npz); see glow_ood.eval_sets. From the command line,
  # --add_eval=mnist:test or --add_eval=/data/mine.npz adds one.
  config.evals = ml_collections.ConfigDict()
  config.evals.fashion_mnist_test = eval_block('fashion_mnist', 'test')

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


def copy_keeping_types(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.copy_and_resolve_references(), with every field that is None keeping its type.

  The plain copy turns a typed placeholder (data.path = None, a str when set) into an
  untyped None, which a --config.<...>=value override can then no longer parse.
  """
  copy = config.copy_and_resolve_references()
  _restore_placeholders(config, copy)
  return copy


def _restore_placeholders(source: ml_collections.ConfigDict,
                          target: ml_collections.ConfigDict) -> None:
  for key in source.keys():
    value = source[key]
    if isinstance(value, ml_collections.ConfigDict):
      _restore_placeholders(value, target[key])
    elif value is None and source.get_type(key) is not type(None):
      target[key] = config_dict.placeholder(source.get_type(key))
