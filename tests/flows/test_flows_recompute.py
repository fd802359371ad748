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
# Two steps per level (three where unroll=2 leaves a remainder step to the loop).
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
  steps = 3 if unroll == 2 else 2
  make = lambda strategy: flows.Glow(2, steps, coupling, invconv, net, 8, 1,
                                     recompute=strategy, scan_unroll=unroll)
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


def _temp_bytes(recompute, steps, unroll):
  model = flows.Glow(1, steps, hidden_channels=16, recompute=recompute, scan_unroll=unroll)
  y = jnp.zeros((32, 16, 16, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), y)
  grad = jax.jit(jax.grad(lambda v, y: model.apply(v, y).log_px.mean()))
  compiled = grad.lower(variables, y).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize('unroll, shallow, deep', [
    (1, 8, 32),      # the steps as a loop (the default off CPU)
    (None, 4, 16),   # unrolled (the CPU default; shallower, as its compile time grows with K)
])
def test_invertible_memory_is_flat_in_depth(unroll, shallow, deep):
  ratio = _temp_bytes('invertible', deep, unroll) / _temp_bytes('invertible', shallow, unroll)
  assert ratio < 1.2, f'K={deep} uses {ratio:.2f}x the temporary memory of K={shallow}'
  # The plain path keeps every step's activations, so the check above can fail.
  assert _temp_bytes('none', deep, unroll) / _temp_bytes('none', shallow, unroll) > 2.0
