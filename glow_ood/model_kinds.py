"""The model kinds a config can name, `config.model.kind`, each declared once.

A kind is a Flax module class. `config.model` holds `kind` plus exactly that
module's dataclass fields (not `n_bits`, which is the top-level config.n_bits);
their names, defaults, types and, through `typing.Literal` annotations, their
allowed values are read from the class, so a new field or a new kind is
written in one place: the module.

Every kind's module follows one protocol, which is all the trainer, the
evaluator and the scores use:

  __call__(y, train=False) -> output     training objective's forward pass
  evaluate(y) -> output                  the evaluation's estimate of log p(y)
  sample(key, image_shape, num, temperature) -> y

where y is a dequantized image batch in [0, 1) ([B, H, W, C], as
glow_ood.likelihood makes it) and `output.terms()` is a dict of per-example
arrays ([B] or [B, levels]) that always holds 'log_px', the log density of y
(for discrete models, log P(x) + D n_bits log 2, so bits/dim are computed the
same way for every kind). Randomness comes in through the rng streams
'dropout' and 'latent'; a kind that does not use them ignores them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from glow_ood import literal_fields
from glow_ood.flows.glow import FLOW_TERMS, Glow
from glow_ood.models.pixelcnn import DOWNSAMPLING_FACTOR, PixelCNNPP
from glow_ood.models.vae import VAE

# Module fields the config's model block does not set: flax's own, and those filled
# from elsewhere in the config (config.n_bits; the image shape from config.data).
_NOT_CONFIG_FIELDS = ('parent', 'name', 'n_bits', 'image_shape')
RNG_STREAMS = ('dropout', 'latent')


SIZES = ('tiny', 'quick', 'paper')


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """Everything about one model kind: its module, how the report names it, its sizes."""
  name: str
  module: type[nn.Module]
  title: str
  likelihood: str  # what its log p(x) is, for the README and report
  description: str = ''  # the report's one-line description ('' = the title)
  # Named variants: (field, value) -> (title, description), e.g. Glow with additive
  # couplings is CV-Glow.
  variants: Mapping[tuple[str, Any], tuple[str, str]] = dataclasses.field(default_factory=dict)
  # Module fields per size: 'tiny' (tests, smoke runs: seconds), 'quick' (minutes on 2
  # CPU cores), 'paper' (the published size: accelerators). A size without an entry
  # keeps the config's own fields (Glow's quick and paper sizes depend on the data set:
  # glow_ood/configs/<data set>.py).
  sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # The other config blocks' settings that go with a size, as {'train.batch_size': 32, ...}.
  size_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # One table cell describing a model block's fields (the report); default: every field.
  summary: Callable[[Mapping[str, Any]], str] = lambda fields: ', '.join(
      f'{k}={v}' for k, v in fields.items() if k != 'kind')
  # Module fields that change how the step runs, never the state: a workdir trained with
  # one value evaluates and resumes with another (glow_ood.workdir_config).
  execution_only: tuple[str, ...] = ()
  # Execution-only fields for programs that differentiate with respect to the pixels at
  # most, never the parameters (evaluation, attacks, Hessians in the pixels, sampling),
  # used where the config leaves the field None (its automatic choice, which is the
  # train step's). Results agree with the train-step build to float round-off.
  evaluation_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The image side must be a multiple of this (its downsamplings), given the fields:
  size_multiple: Callable[[Mapping[str, Any]], tuple[int, str]] = lambda fields: (1, '')
  # log p(x) = log p(z) + log|det|, each term reported per level (a normalising flow).
  decomposes: bool = False
  # log p is a smooth function of the pixel values, so gradients (the second-order
  # analysis, the attacks) mean something; a discrete likelihood is piecewise constant.
  smooth_in_pixels: bool = False
  # Per-image terms beyond log p(x) that DoSE models (glow_ood.scores).
  dose_terms: tuple[str, ...] = ()
  # Whether the train step, at these fields, takes the gradient per device and averages
  # the devices' shares in one flat all-reduce (glow_ood.parallel.per_device_gradient)
  # instead of XLA's automatic partitioning. Only for a training objective that is a batch
  # mean of per-image losses with no random draws inside the model ('latent', 'dropout'):
  # a model that draws would draw the same numbers on every device, unlike the global
  # batch's draws. PixelCNN++ without dropout qualifies but its step ran slower that way
  # (quick, 2 CPU devices, fresh processes: 160, 155, 160 -> 136, 140, 123 img/s).
  per_device_gradient: Callable[[Mapping[str, Any]], bool] = lambda fields: False
  # Images per device and model pass inside one evaluation batch on CPU (glow_ood.evaluate.
  # chunked_apply): the batch's noise is drawn whole, then the model runs over chunks of
  # this many images in a loop, which keeps a chunk's activations in the CPU's caches
  # (same arithmetic per image: the trained quick flows' files repeated to the bit, and the
  # tests check it). 0 = the whole batch at once. Only for a model that
  # draws nothing inside its forward pass (a chunk would repeat the batch's draws).
  cpu_evaluation_chunk: int = 0

  def __post_init__(self):
    for size in {**self.sizes, **self.size_settings}:
      if size not in SIZES:
        raise ValueError(f'{self.name}: unknown size {size!r}; sizes are {SIZES}.')
    unknown = set(self.execution_only).union(*map(set, self.sizes.values())) - set(self.fields())
    if unknown:
      raise ValueError(f'{self.name}: {sorted(unknown)} are not fields of {self.module.__name__}.')
    unknown = set(self.evaluation_fields) - set(self.execution_only)
    if unknown:
      raise ValueError(f'{self.name}: evaluation_fields {sorted(unknown)} must be '
                       'execution-only fields (they may not change what is computed).')

  def names(self, fields: Mapping[str, Any] = {}) -> tuple[str, str]:  # pylint: disable=dangerous-default-value
    """(title, description) of the model with these fields (a named variant's, if any)."""
    for (field, value), names in self.variants.items():
      if dict(fields).get(field) == value:
        return names
    return self.title, self.description or self.title

  def fields(self) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(self.module)
            if f.name not in _NOT_CONFIG_FIELDS and f.init}

  def defaults(self) -> dict[str, Any]:
    return {name: f.default for name, f in self.fields().items()}

  def choices(self, field: str) -> tuple | None:
    """The allowed values of a Literal-annotated field, else None."""
    return literal_fields.choices(self.module, field)

  def field_type(self, field: str) -> type:
    """The field's value type (a Literal's values' type; Optional[T] -> T)."""
    annotation = _field_type(self.module, field)
    if typing.get_origin(annotation) is typing.Literal:
      return type(typing.get_args(annotation)[0])
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and len(args) == 1:
      return args[0]
    return annotation

  def optional(self, field: str) -> bool:
    """Whether None is an allowed value (an Optional field)."""
    return type(None) in typing.get_args(_field_type(self.module, field))

  def build(self, model_cfg: Mapping[str, Any], n_bits: int,
            image_shape: tuple[int, int, int], evaluation: bool = False) -> nn.Module:
    """The module for a config block (its `kind` key and fields); evaluation: for a
    program that takes no parameter gradients (evaluation_fields fill the fields left None)."""
    fields = {k: v for k, v in dict(model_cfg).items() if k != 'kind'}
    if evaluation:
      fields.update({k: v for k, v in self.evaluation_fields.items() if fields.get(k) is None})
    module_fields = {f.name for f in dataclasses.fields(self.module)}
    if 'n_bits' in module_fields:
      fields['n_bits'] = n_bits
    if 'image_shape' in module_fields:
      fields['image_shape'] = tuple(image_shape)
    return self.module(**fields)


def _field_type(module: type, field: str):
  hints = typing.get_type_hints(module)
  return hints[field]


KINDS: dict[str, ModelKind] = {
    'glow': ModelKind(
        'glow', Glow, 'Glow', 'density of the dequantized image; its bits/dim bound log P(x)',
        description='Glow (affine couplings)',
        variants={('coupling', 'additive'): (
            'CV-Glow', 'CV-Glow (additive couplings, constant volume)')},
        size_multiple=lambda f: (2 ** f['num_levels'], 'model.num_levels squeezes'),
        decomposes=True, smooth_in_pixels=True,
        dose_terms=FLOW_TERMS, per_device_gradient=lambda f: True,
        # Quick Glow on one core, batches of 256: 1,291 -> 1,649 img/s (pixel gradients 479
        # -> 592), values equal to the bit; PixelCNN++ gained 283 -> 282-298, so not there.
        cpu_evaluation_chunk=64,
        sizes={'tiny': dict(num_levels=2, steps_per_level=2, coupling_net='glow',
                            hidden_channels=8, num_highway_blocks=1)},
        summary=lambda f: (f'L={f["num_levels"]}, K={f["steps_per_level"]}, '
                           f'{f["coupling_net"]} nets of {f["hidden_channels"]}'),
        execution_only=('recompute', 'dtype', 'scan_unroll'),
        # A rolled scan compiles 2-3x faster and runs as fast or faster where no kernel
        # gradient is taken (quick Glow, 2 CPU devices: evaluation compile 6.2 -> 2.9 s,
        # 1,800 -> 2,190 img/s; a 4-step attack compile 21 -> 8 s, 0.60 -> 0.48 s a batch).
        evaluation_fields={'scan_unroll': 1}),
    # Quick: 1 gated resnet per stage, 16 filters, 5 logistics, about 8 minutes of training
    # on 2 CPU cores at 32x32 (a fraction of an epoch: per image, PixelCNN++ is the costliest
    # model here on a CPU). Paper: Salimans et al.'s CIFAR-10 model (2.92 bits/dim there).
    # Sampling runs the network once per pixel: grids of at most 16 images.
    'pixelcnn': ModelKind(
        'pixelcnn', PixelCNNPP, 'PixelCNN++', 'exact log P(x) of the n-bit image',
        description='PixelCNN++ (autoregressive, exact discrete likelihood)',
        size_multiple=lambda f: (DOWNSAMPLING_FACTOR, 'its two downsamplings'),
        sizes={
            'tiny': dict(num_resnets=1, num_filters=8, num_logistic_mix=2, dropout_rate=0.0),
            'quick': dict(num_resnets=1, num_filters=16, num_logistic_mix=5, dropout_rate=0.0),
            'paper': dict(num_resnets=5, num_filters=160, num_logistic_mix=10,
                          dropout_rate=0.5),
        },
        size_settings={
            'tiny': {'sample.num': 4},
            'quick': {'train.batch_size': 32, 'train.num_steps': 1_000,
                      'train.optimizer': 'adam', 'train.learning_rate': 1e-3,
                      'train.warmup_steps': 50, 'train.checkpoint_every': 200,
                      'sample.num': 16},
            'paper': {'train.batch_size': 16, 'train.num_steps': 500_000,
                      'train.optimizer': 'adam', 'train.learning_rate': 1e-3,
                      'train.warmup_steps': 1_000, 'train.checkpoint_every': 10_000,
                      'sample.num': 16},
        }),
    # Quick: about 4 minutes of training on 2 CPU cores; its log-likelihood is the
    # importance-weighted bound with K = 10 samples (K = 100 costs 10x the evaluation).
    # Paper: the nearest documented setting to Rosca et al. 2018, which the paper used
    # (its exact layers are not given: see glow_ood.models.vae).
    'vae': ModelKind(
        'vae', VAE, 'VAE', 'importance-weighted lower bound on log P(x) '
        '(num_importance_samples samples); training maximises the ELBO',
        description='a VAE (importance-weighted bound)',
        size_multiple=lambda f: (2 ** f['num_blocks'], 'model.num_blocks strided convolutions'),
        dose_terms=('log_px_given_z', 'kl'),
        sizes={
            'tiny': dict(latent_dim=4, num_filters=4, num_blocks=2, num_importance_samples=4),
            'quick': dict(latent_dim=32, num_filters=16, num_blocks=3,
                          num_importance_samples=10),
            'paper': dict(latent_dim=64, num_filters=64, num_blocks=3,
                          num_importance_samples=100),
        },
        size_settings={
            'quick': {'train.batch_size': 64, 'train.num_steps': 2_500,
                      'train.optimizer': 'adam', 'train.learning_rate': 1e-3,
                      'train.warmup_steps': 100, 'train.checkpoint_every': 500},
            'paper': {'train.batch_size': 64, 'train.num_steps': 200_000,
                      'train.optimizer': 'adam', 'train.learning_rate': 3e-4,
                      'train.warmup_steps': 1_000, 'train.checkpoint_every': 10_000},
        },
        execution_only=('num_importance_samples',)),
}


def kind_of(model_cfg: Mapping[str, Any]) -> ModelKind:
  name = dict(model_cfg).get('kind', 'glow')
  if name not in KINDS:
    raise ValueError(f'config.model.kind={name!r} is not a model kind; choose one of '
                     f'{", ".join(repr(k) for k in KINDS)}.')
  return KINDS[name]


def build_model(config, evaluation: bool = False) -> nn.Module:
  """The model module of a full config (config.model, config.n_bits, config.data's shape).

  evaluation: the build for programs that take no parameter gradients (ModelKind.
  evaluation_fields); the train step and initialisation use the default build.
  """
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return kind_of(config.model).build(config.model, config.n_bits, image_shape, evaluation)


def rngs(key: jax.Array) -> dict[str, jax.Array]:
  """One independent key per rng stream a model may draw from."""
  return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))
