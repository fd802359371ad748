"""A level's K steps are one FlowStep under nn.scan: stacked variables, per-step init, one
traced step however deep the level."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import flows

K = 3


def _init(invconv='lu', steps=K, levels=2):
  model = flows.Glow(levels, steps, 'affine', invconv, 'glow', 8)
  y = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1)) ** 2  # skewed: ActNorm must move it
  return model, model.init(jax.random.key(1), y), y


def _step(variables, k, name='level0_steps'):
  """Step k's own variables, sliced from the stacked ones."""
  return {col: jax.tree.map(lambda a: a[k], tree[name])
          for col, tree in variables.items() if name in tree}


def test_variables_are_stacked_per_level():
  model, variables, _ = _init()
  assert set(variables['params']) == {'level0_steps', 'level1_steps', 'level0_split_prior',
                                      'top_prior'}
  assert set(variables['constants']) == {'level0_steps', 'level1_steps'}
  for col in ('params', 'constants'):
    for level in (0, 1):
      for leaf in jax.tree.leaves(variables[col][f'level{level}_steps']):
        assert leaf.shape[0] == K
  assert variables['params']['level1_steps']['actnorm']['bias'].shape == (K, 8)
  # Every step drew its own 1x1 conv: the params rng is split over the steps.
  w = model.apply(variables, method=flows.Glow.first_level_linear_map)[0]
  assert not np.allclose(w[0], w[1])


def test_actnorm_init_sees_each_steps_own_input():
  model, variables, y = _init()
  step = flows.FlowStep(*model._step_fields())
  x = flows.squeeze(y - 0.5)
  for k in range(K):
    v = _step(variables, k)
    normed, _ = step.apply(v, x, method=lambda m, x: m.actnorm(x))
    np.testing.assert_allclose(normed.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(normed.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    x, _ = step.apply(v, x)
  # Run one step after another, the stacked steps are the model's first level.
  out = model.apply(variables, y)
  np.testing.assert_allclose(out.latents[0], x[..., 2:], atol=1e-5)


@pytest.mark.parametrize('invconv', ['lu', 'plain'])
def test_first_level_linear_map_is_each_steps_conv_and_scale(invconv):
  model, variables, _ = _init(invconv)
  weights, scales = model.apply(variables, method=flows.Glow.first_level_linear_map)
  assert weights.shape == (K, 4, 4) and scales.shape == (K, 4)
  for k in range(K):
    v = _step(variables, k)
    w = flows.invconv_matrix(v['params']['conv'], v.get('constants', {}).get('conv'))
    np.testing.assert_allclose(weights[k], w, rtol=1e-6)
    np.testing.assert_allclose(scales[k], jnp.exp(v['params']['actnorm']['log_scale']),
                               rtol=1e-6)
  with pytest.raises(ValueError, match='initialised model'):
    model.apply({'params': {}}, method=flows.Glow.first_level_linear_map)


def test_traced_program_does_not_grow_with_depth():
  def program_size(steps):
    model = flows.Glow(2, steps, hidden_channels=8, scan_unroll=1)
    y = jnp.zeros((2, 8, 8, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), y)
    loss = lambda v: model.apply(v, y).log_px.mean()
    return len(jax.jit(jax.grad(loss)).lower(variables).as_text())
  assert program_size(16) < 1.1 * program_size(2)


def test_unrolling_the_scan_changes_nothing_but_the_program():
  model, variables, y = _init()
  outs = [flows.Glow(2, K, 'affine', 'lu', 'glow', 8, scan_unroll=u).apply(variables, y)
          for u in (None, 1, 2)]
  for out in outs[1:]:
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(out)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='Glow.scan_unroll must be None or >= 1'):
    flows.Glow(2, K, scan_unroll=0).apply(variables, y)
