"""The jitted, optimised train step against a straightforward reference on a tiny model."""

import jax
import numpy as np
import optax
import pytest

from glow_ood import likelihood
from glow_ood import optimizer as optimizer_lib
from glow_ood import parallel
from glow_ood import train
from glow_ood import train_state as train_state_lib
from glow_ood.flows.glow import Glow


@pytest.mark.parametrize('recompute', ['none', 'invertible'])
def test_step_loss_gradient_and_update_match_reference(tiny_config, recompute):
  config = tiny_config
  config.model.recompute = recompute
  config.train.warmup_steps = 0  # step 0 must move the weights
  mesh = parallel.make_mesh()
  x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1), dtype=np.uint8)
  keys = train_state_lib.run_keys(0)
  batch = parallel.global_batch(mesh, x)
  state = train_state_lib.create_train_state(config, mesh, keys['init'], batch)
  params = jax.tree.map(np.asarray, state.params)
  constants = jax.tree.map(np.asarray, state.constants)
  opt_state = jax.tree.map(np.asarray, state.opt_state)
  new_state, metrics = train.make_train_step(config, mesh)(state, batch, keys['train'])

  # Reference: the plain model, plain autodiff, no jit, no mesh.
  model = Glow(config.model.num_levels, config.model.steps_per_level,
               hidden_channels=config.model.hidden_channels)
  y = likelihood.dequantize(jax.random.fold_in(keys['train'], 0),
                            likelihood.reduce_bits(x, config.n_bits), config.n_bits)

  def loss_fn(p):
    out = model.apply({'params': p, 'constants': constants}, y)
    return likelihood.bits_per_dim(out.log_px, 16 * 16, config.n_bits).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, _ = optimizer_lib.make_optimizer(config.train).update(grads, opt_state, params)
  expected = optax.apply_updates(params, updates)

  np.testing.assert_allclose(metrics['bits_per_dim'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['grad_norm'], optax.tree.norm(grads), rtol=1e-4)
  # Adam's first step moves each weight by about lr * sign(grad) (lr = 1e-3): a
  # wrong gradient sign anywhere is off by 2e-3.
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(new_state.params)[0],
                          jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_step_metrics_averages_every_term_and_splits_levels():
  terms = {'log_px': np.array([-10.0, -20.0]),
           'log_pz': np.array([[1.0, 2.0], [3.0, 6.0]]),          # [B, L]
           'kl': np.array([4.0, 8.0])}
  metrics = train.step_metrics(terms, loss=3.5, grad_norm=2.0, learning_rate=1e-3)
  assert metrics['bits_per_dim'] == 3.5 and metrics['grad_norm'] == 2.0
  assert metrics['learning_rate'] == 1e-3
  assert metrics['log_px'] == -15.0 and metrics['kl'] == 6.0
  assert metrics['log_pz'] == 6.0                       # summed over levels, batch mean
  assert (metrics['level0/log_pz'], metrics['level1/log_pz']) == (2.0, 4.0)
  assert set(metrics) == {'bits_per_dim', 'grad_norm', 'learning_rate', 'log_px', 'kl',
                          'log_pz', 'level0/log_pz', 'level1/log_pz'}
