"""One registry of every flow layer and of the whole model, for the parametrised tests.

Each case knows how to build its module, the input shape, and how to express the
module as a map x -> (flat output, per-example log|det|) and back.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from glow_ood import flows


@dataclasses.dataclass(frozen=True)
class FlowCase:
  name: str
  make: Callable[[], object]
  shape: tuple  # input shape including batch
  kind: str = 'layer'  # 'layer': forward/inverse -> (y, logdet); 'glow': the whole model


def _couplings():
  for cls in (flows.AffineCoupling, flows.AdditiveCoupling):
    for net in ('glow', 'highway'):
      yield FlowCase(f'{cls.__name__}-{net}',
                     lambda cls=cls, net=net: cls(net=net, hidden_channels=6, num_highway_blocks=2),
                     (3, 3, 3, 4))


CASES = [
    FlowCase('ActNorm', flows.ActNorm, (3, 3, 3, 4)),
    FlowCase('InvConv1x1-plain', flows.InvConv1x1, (3, 3, 3, 4)),
    FlowCase('InvConv1x1-LU', flows.InvConv1x1LU, (3, 3, 3, 4)),
    *_couplings(),
    FlowCase('Squeeze', flows.Squeeze, (3, 4, 4, 2)),
    FlowCase('FlowStep-affine-lu', lambda: flows.FlowStep('affine', 'lu', 'glow', 6), (3, 3, 3, 4)),
    FlowCase('FlowStep-additive-plain',
             lambda: flows.FlowStep('additive', 'plain', 'highway', 6, 1), (3, 3, 3, 4)),
    FlowCase('Glow-affine-lu', lambda: flows.Glow(2, 2, 'affine', 'lu', 'glow', 6), (3, 4, 4, 1), 'glow'),
    FlowCase('Glow-affine-plain-highway',
             lambda: flows.Glow(2, 1, 'affine', 'plain', 'highway', 6, 1, False), (3, 4, 4, 2), 'glow'),
    FlowCase('CVGlow-additive-lu', lambda: flows.Glow(2, 2, 'additive', 'lu', 'glow', 6), (3, 4, 4, 1), 'glow'),
    FlowCase('CVGlow-additive-plain',
             lambda: flows.Glow(1, 2, 'additive', 'plain', 'glow', 6), (3, 4, 4, 1), 'glow'),
]


def sample_input(case: FlowCase, seed: int = 0, dtype=jnp.float32):
  x = jax.random.uniform(jax.random.key(seed), case.shape, dtype=jnp.float32)
  return x.astype(dtype)


def init_perturbed(case: FlowCase, seed: int = 0, scale: float = 0.1):
  """Init from data, then move every trainable parameter off its (often trivial) init.

  Zero-initialised last layers make a fresh coupling the identity; the checks must
  see non-trivial maps. Every leaf of 'params' moves, as any optimizer may move it;
  the 'constants' collection (LU's permutation and signs) is left as it is.
  """
  module = case.make()
  x = sample_input(case, seed)

  # One jitted program: run op by op, a Glow's init compiles a hundred tiny programs.
  @jax.jit
  def init(x):
    variables = module.init(jax.random.key(seed + 1), x, method=_forward_method(case))
    leaves, treedef = jax.tree_util.tree_flatten(variables.get('params', {}))
    if not leaves:  # Squeeze: nothing to move
      return variables
    keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
    moved = [leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype)
             for leaf, key in zip(leaves, keys)]
    return dict(variables, params=jax.tree_util.tree_unflatten(treedef, moved))
  return module, init(x)


def _forward_method(case):
  return 'forward'


def forward(case, module, variables, x):
  """x -> (flat output [B, D], logdet [B])."""
  if case.kind == 'glow':
    out = module.apply(variables, x, method='forward')
    flat = jnp.concatenate([z.reshape(z.shape[0], -1) for z in out.latents], axis=-1)
    return flat, out.total_logdet, out
  y, logdet = module.apply(variables, x, method='forward')
  return y.reshape(y.shape[0], -1), logdet, y


def inverse(case, module, variables, y_or_out):
  """Inverse of `forward`'s third return value -> (x, logdet or None)."""
  if case.kind == 'glow':
    return module.apply(variables, y_or_out.latents, method='inverse'), None
  return module.apply(variables, y_or_out, method='inverse')


def to_float64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
