"""Multi-scale Glow and CV-Glow, with every log-likelihood term reported separately.

Forward pass, for L levels of K steps:

    y in [0, 1)  ->  x = y - 1/2
    for each level l:   squeeze; K x (ActNorm, 1x1 conv, coupling);
                        l < L-1: split off half the channels as z_l under a
                                 conditional Gaussian prior;
                        l = L-1: the rest is z_l under the top prior.

log p(y) = sum_l log p(z_l) + sum_{l, kind} log|det|_{l, kind}, and GlowOutput
keeps each of those terms per example, per level and per layer kind.
`coupling='additive'` gives CV-Glow: the only log-dets left (ActNorm, 1x1 conv)
do not depend on the input, so the volume term is the same for every image.
"""

from typing import Literal, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from glow_ood.flows.actnorm import ActNorm
from glow_ood.flows.coupling import COUPLING_NETS, AdditiveCoupling, AffineCoupling
from glow_ood.flows.invconv import InvConv1x1, InvConv1x1LU
from glow_ood.flows.priors import SplitPrior, TopPrior
from glow_ood.flows.recompute import invertible_chain
from glow_ood.flows.squeeze import squeeze, unsqueeze

LOGDET_KINDS = ('actnorm', 'invconv', 'coupling')
COUPLINGS = ('affine', 'additive')
INVCONVS = ('lu', 'plain')
RECOMPUTES = ('none', 'checkpoint', 'invertible')
DTYPES = ('float32', 'bfloat16')


def total_logdet(terms) -> jax.Array:
  """Sum over kinds and levels of the 'logdet_<kind>' [B, L] entries of a terms mapping
  (GlowOutput.terms(), or an evaluation file's arrays): the volume term of log p(x)."""
  return sum(terms[f'logdet_{kind}'].sum(-1) for kind in LOGDET_KINDS)


@flax.struct.dataclass
class GlowOutput:
  """Per-example record of one forward pass (B = batch, L = levels)."""
  log_px: jax.Array                # [B] log density of the continuous input y, nats
  log_pz: jax.Array                # [B, L] prior term per level
  logdet: dict[str, jax.Array]     # kind -> [B, L], kinds = LOGDET_KINDS
  latents: tuple[jax.Array, ...]   # z_l, one per level

  @property
  def total_logdet(self) -> jax.Array:
    return total_logdet(self.terms())

  def terms(self) -> dict[str, jax.Array]:
    """Per-example terms by name: log_px [B], log_pz [B, L], logdet_<kind> [B, L]."""
    terms = {'log_px': self.log_px, 'log_pz': self.log_pz}
    terms.update({f'logdet_{kind}': value for kind, value in self.logdet.items()})
    return terms


class FlowStep(nn.Module):
  """ActNorm -> invertible 1x1 conv -> coupling; log-dets returned per kind."""
  coupling: str = 'affine'
  invconv: str = 'lu'
  coupling_net: str = 'glow'
  hidden_channels: int = 512
  num_highway_blocks: int = 3
  dtype: str = 'float32'        # the coupling nets' activations

  def setup(self):
    self.actnorm = ActNorm()
    self.conv = InvConv1x1LU() if self.invconv == 'lu' else InvConv1x1()
    coupling_cls = AffineCoupling if self.coupling == 'affine' else AdditiveCoupling
    self.couple = coupling_cls(self.coupling_net, self.hidden_channels, self.num_highway_blocks,
                               net_dtype=self.dtype)

  def forward_terms(self, x):
    """x -> (y, {kind: logdet [B]})."""
    x, ld_actnorm = self.actnorm.forward(x)
    x, ld_invconv = self.conv.forward(x)
    x, ld_coupling = self.couple.forward(x)
    return x, {'actnorm': ld_actnorm, 'invconv': ld_invconv, 'coupling': ld_coupling}

  def inverse_terms(self, y):
    y, ld_coupling = self.couple.inverse(y)
    y, ld_invconv = self.conv.inverse(y)
    y, ld_actnorm = self.actnorm.inverse(y)
    return y, {'actnorm': ld_actnorm, 'invconv': ld_invconv, 'coupling': ld_coupling}

  def forward(self, x):
    y, terms = self.forward_terms(x)
    return y, sum(terms.values())

  def inverse(self, y):
    x, terms = self.inverse_terms(y)
    return x, sum(terms.values())

  def __call__(self, x):
    return self.forward(x)


def latent_shapes(image_shape: Sequence[int], num_levels: int) -> list[tuple[int, int, int]]:
  """Shapes [H, W, C] of z_0 .. z_{L-1} for an image of shape [H, W, C]."""
  h, w, c = image_shape
  shapes = []
  for level in range(num_levels):
    h, w, c = h // 2, w // 2, 4 * c
    if level < num_levels - 1:
      shapes.append((h, w, c // 2))
      c = c // 2
    else:
      shapes.append((h, w, c))
  return shapes


class Glow(nn.Module):
  """Glow (affine couplings) or CV-Glow (additive), L levels x K steps.

  The fields are the config's model block (glow_ood.model_kinds reads names,
  defaults and the Literal choices from here).
  """
  num_levels: int = 3
  steps_per_level: int = 32
  coupling: Literal[COUPLINGS] = 'affine'      # 'additive' = CV-Glow, constant volume
  invconv: Literal[INVCONVS] = 'lu'            # 'plain': an unconstrained 1x1 matrix
  coupling_net: Literal[COUPLING_NETS] = 'glow'  # Glow's 3-conv net | gated highway blocks
  hidden_channels: int = 512
  num_highway_blocks: int = 3
  learn_top_prior: bool = True
  # How the backward pass gets each step's activations: 'none' keeps them all;
  # 'checkpoint' recomputes them per step from kept inputs (jax.checkpoint, which
  # XLA's CPU backend may undo); 'invertible' rebuilds them from each level's
  # output through the inverse, so memory stays flat in K on every backend.
  recompute: Literal[RECOMPUTES] = 'none'
  # Coupling nets' activations; params, log-dets and priors stay float32.
  dtype: Literal[DTYPES] = 'float32'

  def setup(self):
    _check_choice('coupling', self.coupling, COUPLINGS)
    _check_choice('invconv', self.invconv, INVCONVS)
    _check_choice('coupling_net', self.coupling_net, COUPLING_NETS)
    _check_choice('recompute', self.recompute, RECOMPUTES)
    _check_choice('dtype', self.dtype, DTYPES)
    if self.num_levels < 1 or self.steps_per_level < 1:
      raise ValueError(f'num_levels and steps_per_level must be >= 1, got '
                       f'{self.num_levels} and {self.steps_per_level}.')
    step_cls = (nn.remat(FlowStep, methods=['forward_terms', 'inverse_terms'])
                if self.recompute == 'checkpoint' else FlowStep)
    self.steps = [
        [step_cls(*self._step_fields(), name=f'level{l}_step{k}')
         for k in range(self.steps_per_level)]
        for l in range(self.num_levels)]
    self.split_priors = [SplitPrior(name=f'level{l}_split_prior')
                         for l in range(self.num_levels - 1)]
    self.top_prior = TopPrior(learned=self.learn_top_prior, name='top_prior')

  def _step_fields(self):
    return (self.coupling, self.invconv, self.coupling_net, self.hidden_channels,
            self.num_highway_blocks, self.dtype)

  def _level_steps(self, level: int, x: jax.Array):
    """x -> (y, {kind: log-det [B]} summed over the level's steps)."""
    steps = self.steps[level]
    if self.recompute != 'invertible' or self.is_initializing():
      level_ld = {kind: jnp.zeros(x.shape[:1], x.dtype) for kind in LOGDET_KINDS}
      for step in steps:
        x, ld = step.forward_terms(x)
        level_ld = {kind: level_ld[kind] + ld[kind] for kind in LOGDET_KINDS}
      return x, level_ld
    # The steps as pure functions of their variables, so a custom VJP can run
    # them backwards; every collection a step owns goes along.
    template = FlowStep(*self._step_fields(), parent=None)
    forward = lambda v, x: template.apply(v, x, method=FlowStep.forward_terms)
    inverse = lambda v, y: template.apply(v, y, method=FlowStep.inverse_terms)[0]
    step_variables = [
        {col: tree[step.name] for col, tree in self.variables.items() if step.name in tree}
        for step in steps]
    return invertible_chain(forward, inverse, step_variables, x)

  def __call__(self, y, train: bool = False):
    del train  # Glow has no train-only behaviour (no dropout, no sampled latents)
    return self.forward(y)

  def evaluate(self, y: jax.Array) -> GlowOutput:
    """The exact log density of y, term by term (the same pass as training)."""
    return self.forward(y)

  def forward(self, y: jax.Array) -> GlowOutput:
    """y: [B, H, W, C] dequantized images in [0, 1)."""
    _check_image(y, self.num_levels)
    x = y - 0.5  # centring is a translation: no log-det
    log_pz, latents = [], []
    logdet = {kind: [] for kind in LOGDET_KINDS}
    for level in range(self.num_levels):
      x, level_ld = self._level_steps(level, squeeze(x))
      for kind in LOGDET_KINDS:
        logdet[kind].append(level_ld[kind])
      if level < self.num_levels - 1:
        x, z, lp = self.split_priors[level].forward(x)
      else:
        z, lp = x, self.top_prior.log_prob(x)
      latents.append(z)
      log_pz.append(lp)
    log_pz = jnp.stack(log_pz, axis=-1)
    logdet = {kind: jnp.stack(v, axis=-1) for kind, v in logdet.items()}
    out = GlowOutput(log_px=None, log_pz=log_pz, logdet=logdet, latents=tuple(latents))
    return out.replace(log_px=log_pz.sum(-1) + out.total_logdet)

  def _decode(self, top: jax.Array, level_inputs):
    """Runs the levels backwards; level_inputs(level, x_kept) gives z for a split level."""
    x = top
    for level in reversed(range(self.num_levels)):
      if level < self.num_levels - 1:
        x = level_inputs(level, x)
      for step in reversed(self.steps[level]):
        x, _ = step.inverse(x)
      x = unsqueeze(x)
    return x + 0.5

  def inverse(self, latents: Sequence[jax.Array]) -> jax.Array:
    """Latents (as returned by forward) -> images y."""
    if len(latents) != self.num_levels:
      raise ValueError(f'Expected {self.num_levels} latents, got {len(latents)}.')
    return self._decode(
        latents[-1], lambda level, x: self.split_priors[level].inverse(x, latents[level]))

  def sample(self, key: jax.Array, image_shape: Sequence[int], num: int,
             temperature: float = 1.0) -> jax.Array:
    """Draws `num` images, every prior's std scaled by `temperature`."""
    shapes = latent_shapes(image_shape, self.num_levels)
    keys = jax.random.split(key, self.num_levels)
    top = self.top_prior.sample(keys[-1], num, shapes[-1], temperature)
    return self._decode(
        top, lambda level, x: self.split_priors[level].sample(x, keys[level], temperature))


def _check_choice(name, value, allowed):
  if value not in allowed:
    raise ValueError(f'model.{name} must be one of {allowed}, got {value!r}.')


def _check_image(y, num_levels):
  if y.ndim != 4:
    raise ValueError(f'Glow expects images [batch, height, width, channels], got shape {y.shape}.')
  if not jnp.issubdtype(y.dtype, jnp.floating):
    raise TypeError(f'Glow expects dequantized float images in [0, 1), got dtype {y.dtype}; '
                    'use glow_ood.likelihood.reduce_bits and dequantize first.')
  factor = 2 ** num_levels
  if y.shape[1] % factor or y.shape[2] % factor:
    raise ValueError(f'Image height and width must be divisible by 2**num_levels = {factor}, '
                     f'got shape {y.shape}.')


def glow_from_config(model_cfg: ml_collections.ConfigDict) -> Glow:
  """Builds Glow from a config block whose fields are Glow's fields."""
  fields = {f for f in Glow.__dataclass_fields__ if f not in ('parent', 'name')}
  if 'remat' in model_cfg:
    raise ValueError("model.remat was replaced by model.recompute: 'none' | 'checkpoint' "
                     "(was remat=True) | 'invertible' (memory flat in depth on every backend).")
  unknown = set(model_cfg.keys()) - fields
  if unknown:
    raise ValueError(f'Unknown model config keys {sorted(unknown)}; allowed: {sorted(fields)}.')
  return Glow(**dict(model_cfg))
