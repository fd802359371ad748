"""model.recompute: every strategy gives the plain path's outputs and gradients, and
'invertible' keeps the compiled memory of a gradient step flat in depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import flows
from tests.flows.flow_registry import FlowCase, init_perturbed


def _loss(model, variables, y):
  out = model.apply(variables, y)
  # Weight every term differently so a wrong cotangent for any of them shows.
  return (out.log_px.sum() + 0.3 * out.log_pz[:, 0].sum()
          + sum((i + 1) * 0.1 * v.sum() for i, v in enumerate(out.logdet.values()))
          + 0.01 * sum(jnp.sum(z ** 2) for z in out.latents))


# scan_unroll None unrolls the scans on CPU; 1 and 2 keep them loops, as on other backends.
@pytest.mark.parametrize('recompute, coupling, invconv, net, unroll', [
    ('invertible', 'affine', 'lu', 'glow', None),
    ('invertible', 'affine', 'lu', 'glow', 1),
    ('invertible', 'affine', 'plain', 'highway', 2),
    ('invertible', 'additive', 'lu', 'highway', None),
    ('invertible', 'additive', 'plain', 'glow', 1),
    ('checkpoint', 'affine', 'lu', 'glow', None),
    ('checkpoint', 'affine', 'lu', 'glow', 1),
])
def test_recompute_matches_plain_outputs_and_gradients(recompute, coupling, invconv, net,
                                                       unroll):
  make = lambda strategy: flows.Glow(2, 3, coupling, invconv, net, 8, 1, recompute=strategy,
                                     scan_unroll=unroll)
  case = FlowCase('glow', lambda: make('none'), (4, 8, 8, 2), 'glow')
  _, variables = init_perturbed(case, scale=0.1)
  y = jax.random.uniform(jax.random.key(5), case.shape)
  results = []
  for strategy in ('none', recompute):
    model = make(strategy)
    out = jax.jit(model.apply)(variables, y)
    grads = jax.jit(jax.grad(lambda v, y: _loss(model, v, y), argnums=(0, 1)))(variables, y)
    results.append((out, grads))
  (out_plain, grads_plain), (out_new, grads_new) = results
  for a, b in zip(jax.tree.leaves(out_plain), jax.tree.leaves(out_new)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  flat_plain = jax.tree_util.tree_flatten_with_path(grads_plain)[0]
  flat_new = jax.tree.leaves(grads_new)
  for (path, a), b in zip(flat_plain, flat_new):
    scale = float(jnp.max(jnp.abs(a))) + 1e-3
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_invertible_init_equals_plain_init():
  y = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  plain = flows.Glow(2, 2, hidden_channels=8).init(jax.random.key(1), y)
  inv = flows.Glow(2, 2, hidden_channels=8, recompute='invertible').init(jax.random.key(1), y)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(inv)):
    np.testing.assert_array_equal(a, b)


def _temp_bytes(recompute, steps):
  model = flows.Glow(1, steps, hidden_channels=16, recompute=recompute)
  y = jnp.zeros((32, 16, 16, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), y)
  grad = jax.jit(jax.grad(lambda v, y: model.apply(v, y).log_px.mean()))
  compiled = grad.lower(variables, y).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_invertible_memory_is_flat_in_depth():
  ratio = _temp_bytes('invertible', 32) / _temp_bytes('invertible', 8)
  assert ratio < 1.2, f'K=32 uses {ratio:.2f}x the temporary memory of K=8'
  # The plain path keeps every step's activations, so the check above can fail
  # (shallower, to compile faster: the same growth with depth shows at K=4 -> 16).
  assert _temp_bytes('none', 16) / _temp_bytes('none', 4) > 2.0
