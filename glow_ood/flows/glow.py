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

The K steps of a level are one `FlowStep` under `nn.scan`: its variables carry a
leading axis of length K (params['level{l}_steps'], and the same under
'constants'), and the compiler sees one step per level instead of K copies.
"""

from typing import Literal, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from glow_ood import literal_fields
from glow_ood.flows.actnorm import ActNorm
from glow_ood.flows.base import InvertibleLayer
from glow_ood.flows.coupling import COUPLING_NETS, AdditiveCoupling, AffineCoupling
from glow_ood.flows.invconv import CONSTANTS, InvConv1x1, InvConv1x1LU, invconv_matrix
from glow_ood.flows.priors import SplitPrior, TopPrior
from glow_ood.flows.recompute import invertible_chain
from glow_ood.flows.squeeze import Squeeze

LOGDET_KINDS = ('actnorm', 'invconv', 'coupling')
# A Glow evaluation's per-image terms besides log_px: log p(z) per level, then each
# kind's log-det per level (what DoSE models, and the decomposition reports).
FLOW_TERMS = ('log_pz',) + tuple(f'logdet_{kind}' for kind in LOGDET_KINDS)
COUPLINGS = ('affine', 'additive')
INVCONVS = ('lu', 'plain')
RECOMPUTES = ('none', 'checkpoint', 'invertible')
DTYPES = ('float32', 'bfloat16')

# Collections stacked over a level's steps: the trainable ones and the LU convs' fixed parts.
_STACKED = {'params': 0, CONSTANTS: 0}


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


class FlowStep(InvertibleLayer):
  """ActNorm -> invertible 1x1 conv -> coupling.

  `__call__` gives the total log-det like every layer; `forward_terms` and
  `inverse_terms` give it per kind ({kind: [B]}, kinds = LOGDET_KINDS).
  """
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
    x, ld_actnorm = self.actnorm(x)
    x, ld_invconv = self.conv(x)
    x, ld_coupling = self.couple(x)
    return x, {'actnorm': ld_actnorm, 'invconv': ld_invconv, 'coupling': ld_coupling}

  def inverse_terms(self, y):
    """y -> (x, {kind: logdet [B]}), each the negation of forward_terms'."""
    y, ld_coupling = self.couple(y, inverse=True)
    y, ld_invconv = self.conv(y, inverse=True)
    y, ld_actnorm = self.actnorm(y, inverse=True)
    return y, {'actnorm': ld_actnorm, 'invconv': ld_invconv, 'coupling': ld_coupling}

  def __call__(self, x, inverse: bool = False):
    y, terms = self.inverse_terms(x) if inverse else self.forward_terms(x)
    return y, sum(terms.values())


def _forward_body(step: FlowStep, carry, _):
  x, totals = carry
  y, terms = step.forward_terms(x)
  return (y, jax.tree.map(jnp.add, totals, terms)), None


def _inverse_body(step: FlowStep, carry, _):
  y, totals = carry
  x, terms = step.inverse_terms(y)
  return (x, jax.tree.map(jnp.add, totals, terms)), None


def _zero_terms(x):
  return {kind: jnp.zeros(x.shape[:1], x.dtype) for kind in LOGDET_KINDS}


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
  # Steps per iteration of a level's scan. None: all K on CPU, whose XLA backend runs a
  # convolution's kernel gradient inside a loop 20-30x slower than outside one (unrolled,
  # a train step runs as fast as K separate steps but compiles about 2x slower); 1 elsewhere.
  # Programs without parameter gradients (evaluation, attacks) build with 1 on every backend
  # (glow_ood.model_kinds, evaluation_fields).
  scan_unroll: int | None = None

  def setup(self):
    literal_fields.check(self)  # coupling, invconv, coupling_net, recompute, dtype
    if self.scan_unroll is not None and self.scan_unroll < 1:
      raise ValueError(f'Glow.scan_unroll must be None or >= 1, got {self.scan_unroll}.')
    if self.num_levels < 1 or self.steps_per_level < 1:
      raise ValueError(f'Glow.num_levels and Glow.steps_per_level must be >= 1, got '
                       f'{self.num_levels} and {self.steps_per_level}.')
    self.squeeze = Squeeze()
    # One FlowStep per level; the scans below give its variables a leading K axis.
    self.levels = [FlowStep(*self._step_fields(), name=f'level{l}_steps')
                   for l in range(self.num_levels)]
    self.split_priors = [SplitPrior(name=f'level{l}_split_prior')
                         for l in range(self.num_levels - 1)]
    self.top_prior = TopPrior(learned=self.learn_top_prior, name='top_prior')

  def _step_fields(self):
    return (self.coupling, self.invconv, self.coupling_net, self.hidden_channels,
            self.num_highway_blocks, self.dtype)

  def _unroll(self) -> int:
    if self.scan_unroll is not None:
      return min(self.scan_unroll, self.steps_per_level)
    return self.steps_per_level if jax.default_backend() == 'cpu' else 1

  def _scan(self, body, level: int, x: jax.Array, reverse: bool = False):
    """Runs `body` over the level's K steps -> (x, {kind: log-det [B]} summed over steps)."""
    if self.recompute == 'checkpoint':
      # prevent_cse=False: the scan already keeps XLA from merging the recomputation away.
      body = nn.remat(body, prevent_cse=False)
    scan = nn.scan(body, variable_axes=_STACKED, split_rngs={'params': True},
                   length=self.steps_per_level, reverse=reverse, unroll=self._unroll())
    (x, totals), _ = scan(self.levels[level], (x, _zero_terms(x)), None)
    return x, totals

  def _level_forward(self, level: int, x: jax.Array):
    """x -> (y, {kind: log-det [B]} summed over the level's steps)."""
    # Initialisation runs the plain scan: ActNorm's data-dependent init sees each
    # step's own input there.
    if self.recompute != 'invertible' or self.is_initializing():
      return self._scan(_forward_body, level, x)
    # The steps as pure functions of one step's variables, so a custom VJP can run
    # them backwards over the stacked variables; every collection a step owns goes along.
    template = FlowStep(*self._step_fields(), parent=None)
    forward = lambda v, x: template.apply(v, x, method=FlowStep.forward_terms)
    inverse = lambda v, y: template.apply(v, y, method=FlowStep.inverse_terms)[0]
    name = self.levels[level].name
    stacked = {col: tree[name] for col, tree in self.variables.items() if name in tree}
    return invertible_chain(forward, inverse, stacked, x, unroll=self._unroll())

  def _level_inverse(self, level: int, y: jax.Array) -> jax.Array:
    """The level's steps inverted, last step first."""
    return self._scan(_inverse_body, level, y, reverse=True)[0]

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
      x, _ = self.squeeze(x)
      x, level_ld = self._level_forward(level, x)
      for kind in LOGDET_KINDS:
        logdet[kind].append(level_ld[kind])
      if level < self.num_levels - 1:
        x, z = SplitPrior.split(x)
        lp = self.split_priors[level].log_prob(z, x)
      else:
        z, lp = x, self.top_prior.log_prob(x)
      latents.append(z)
      log_pz.append(lp)
    log_pz = jnp.stack(log_pz, axis=-1)
    logdet = {kind: jnp.stack(v, axis=-1) for kind, v in logdet.items()}
    out = GlowOutput(log_px=None, log_pz=log_pz, logdet=logdet, latents=tuple(latents))
    return out.replace(log_px=log_pz.sum(-1) + out.total_logdet)

  def _decode(self, top: jax.Array, split_latent):
    """Runs the levels backwards; split_latent(level, x_kept) gives z of a split level."""
    x = top
    for level in reversed(range(self.num_levels)):
      if level < self.num_levels - 1:
        x = SplitPrior.merge(x, split_latent(level, x))
      x = self._level_inverse(level, x)
      x, _ = self.squeeze(x, inverse=True)
    return x + 0.5

  def inverse(self, latents: Sequence[jax.Array]) -> jax.Array:
    """Latents (as returned by forward) -> images y."""
    if len(latents) != self.num_levels:
      raise ValueError(f'Glow.inverse expects {self.num_levels} latents (one per level, as '
                       f'forward returns them), got {len(latents)}.')
    return self._decode(latents[-1], lambda level, _: latents[level])

  def sample(self, key: jax.Array, image_shape: Sequence[int], num: int,
             temperature: float = 1.0) -> jax.Array:
    """Draws `num` images, every prior's std scaled by `temperature`."""
    shapes = latent_shapes(image_shape, self.num_levels)
    keys = jax.random.split(key, self.num_levels)
    top = self.top_prior.sample(keys[-1], num, shapes[-1], temperature)
    return self._decode(
        top, lambda level, x: self.split_priors[level].sample(keys[level], x, temperature))

  def first_level_linear_map(self) -> tuple[jax.Array, jax.Array]:
    """(1x1-conv weights [K, in, out], ActNorm scales [K, C]) of the first level, in step order.

    With the couplings taken as identity these K (ActNorm, 1x1 conv) pairs are the
    whole first level: z = squeeze(y - 1/2) @ M + const,
    M = diag(s_1) W_1 ... diag(s_K) W_K. Call it as
    `model.apply(variables, method=Glow.first_level_linear_map)`.
    """
    name = self.levels[0].name
    if not self.has_variable('params', name):
      raise ValueError('Glow.first_level_linear_map needs the variables of an initialised '
                       'model: pass those model.init returned (params and constants).')
    params = self.variables['params'][name]
    constants = self.variables.get(CONSTANTS, {}).get(name, {}).get('conv')
    weights = jax.vmap(invconv_matrix)(params['conv'], constants)
    scales = jnp.exp(params['actnorm']['log_scale'])
    return weights, scales


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
