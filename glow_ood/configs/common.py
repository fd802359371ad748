"""Every config field with its default; experiment configs start from here."""
import ml_collections
from ml_collections import config_dict

from glow_ood import config_blocks
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


def with_kind(config: ml_collections.ConfigDict, kind: str,
              size: str) -> ml_collections.ConfigDict:
  """`config` (any training config) with a `kind` model at `size` ('tiny' | 'quick' |
  'paper'): the kind's fields and other settings for that size (glow_ood.model_kinds).

  A config of another kind gets a fresh model block (the new kind's defaults); a config
  of the same kind keeps the fields the size does not set. Returns the config.
  """
  if size not in model_kinds.SIZES:
    raise ValueError(f'Unknown size {size!r}; choose one of {model_kinds.SIZES}.')
  spec = model_kinds.KINDS[kind]
  if config.model.get('kind') != kind:
    config.model = model_block(kind)
  config.model.update(spec.sizes.get(size, {}))
  for dotted, value in spec.size_settings.get(size, {}).items():
    block, field = dotted.split('.')
    config[block][field] = value
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

  # The train, eval, scores and sample blocks: every field with its default, type, range
  # and doc is declared once, in glow_ood.config_blocks (TrainBlock, EvalBlock, ...).
  config.train = config_blocks.block_config(config_blocks.TrainBlock)
  # Defaults of every evaluation set.
  config.eval = config_blocks.block_config(config_blocks.EvalBlock)

  # What --mode=evaluate evaluates: one block per set, keyed by its file name
  # (eval/<key>_step<S>.npz); see glow_ood.eval_sets. From the command line,
  # --add_eval=mnist:test or --add_eval=/data/mine.npz adds one.
  config.evals = ml_collections.ConfigDict()
  config.evals.fashion_mnist_test = eval_block('fashion_mnist', 'test')

  # OOD scores of --mode=evaluate (glow_ood.score_files).
  config.scores = config_blocks.block_config(config_blocks.ScoresBlock)
  config.sample = config_blocks.block_config(config_blocks.SampleBlock)
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
