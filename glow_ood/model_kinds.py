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


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """One model kind: its module and how the report names it."""
  name: str
  module: type[nn.Module]
  title: str
  likelihood: str  # what its log p(x) is, for the README and report
  # The image side must be a multiple of this (its downsamplings), given the fields:
  size_multiple: Callable[[Mapping[str, Any]], tuple[int, str]] = lambda fields: (1, '')
  # log p(x) = log p(z) + log|det|, each term reported per level (a normalising flow).
  decomposes: bool = False
  # log p is a smooth function of the pixel values, so gradients (the second-order
  # analysis, the attacks) mean something; a discrete likelihood is piecewise constant.
  smooth_in_pixels: bool = False
  # Per-image terms beyond log p(x) that DoSE models (glow_ood.scores).
  dose_terms: tuple[str, ...] = ()

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
            image_shape: tuple[int, int, int]) -> nn.Module:
    """The module for a config block (its `kind` key and fields)."""
    fields = {k: v for k, v in dict(model_cfg).items() if k != 'kind'}
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
        size_multiple=lambda f: (2 ** f['num_levels'], 'model.num_levels squeezes'),
        decomposes=True, smooth_in_pixels=True,
        dose_terms=FLOW_TERMS),
    'pixelcnn': ModelKind(
        'pixelcnn', PixelCNNPP, 'PixelCNN++', 'exact log P(x) of the n-bit image',
        size_multiple=lambda f: (DOWNSAMPLING_FACTOR, 'its two downsamplings')),
    'vae': ModelKind(
        'vae', VAE, 'VAE', 'importance-weighted lower bound on log P(x) '
        '(num_importance_samples samples); training maximises the ELBO',
        size_multiple=lambda f: (2 ** f['num_blocks'], 'model.num_blocks strided convolutions'),
        dose_terms=('log_px_given_z', 'kl')),
}


def kind_of(model_cfg: Mapping[str, Any]) -> ModelKind:
  name = dict(model_cfg).get('kind', 'glow')
  if name not in KINDS:
    raise ValueError(f'config.model.kind={name!r} is not a model kind; choose one of '
                     f'{", ".join(repr(k) for k in KINDS)}.')
  return KINDS[name]


def build_model(config) -> nn.Module:
  """The model module of a full config (config.model, config.n_bits, config.data's shape)."""
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return kind_of(config.model).build(config.model, config.n_bits, image_shape)


def rngs(key: jax.Array) -> dict[str, jax.Array]:
  """One independent key per rng stream a model may draw from."""
  return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))
