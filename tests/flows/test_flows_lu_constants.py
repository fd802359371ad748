"""Optimizers that move parameters without a gradient (weight decay) cannot reach the LU
convs' fixed P and sign, so the model's log-det stays the log-det of its Jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.flows.flow_registry import CASES, forward, sample_input, to_float64

GLOW_LU = next(case for case in CASES if case.name == 'Glow-affine-lu')


def _train_with_weight_decay(steps: int = 15):
  module = GLOW_LU.make()
  x = sample_input(GLOW_LU, seed=0)
  variables = module.init(jax.random.key(1), x, method='forward')
  optimizer = optax.adamw(1e-2, weight_decay=1.0)

  def loss(params):
    return -module.apply(dict(variables, params=params), x, method='forward').log_px.mean()

  @jax.jit
  def step(params, opt_state):
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = variables['params'], optimizer.init(variables['params'])
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return module, variables, dict(variables, params=params)


def test_weight_decay_keeps_the_logdet_equal_to_the_jacobians():
  module, initial, trained = _train_with_weight_decay()
  # The optimizer did move every trainable leaf, and never saw the constants.
  for before, after in zip(jax.tree.leaves(initial['params']), jax.tree.leaves(trained['params'])):
    assert float(jnp.abs(after - before).max()) > 0
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()),
                                   initial['constants'], trained['constants']))
  with jax.enable_x64(True):
    variables = to_float64(trained)
    x = sample_input(GLOW_LU, seed=3, dtype=jnp.float64)
    _, logdet, _ = forward(GLOW_LU, module, variables, x)
    one_shape = (1,) + x.shape[1:]
    jacobian = jax.jit(jax.jacfwd(
        lambda v: forward(GLOW_LU, module, variables, v.reshape(one_shape))[0][0]))
    for i in range(x.shape[0]):
      xi = x[i:i + 1]
      sign, expected = jnp.linalg.slogdet(jacobian(xi.reshape(-1)))
      assert sign != 0
      np.testing.assert_allclose(logdet[i], expected, rtol=1e-9, atol=1e-7)
