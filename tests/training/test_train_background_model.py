"""What a likelihood-ratio background model trains with: mutated pixels and L2 on trainable leaves."""

import jax
import jax.numpy as jnp
import numpy as np

from glow_ood import parallel
from glow_ood import optimizer as optimizer_lib
from glow_ood import train
from glow_ood import train_state as train_state_lib
from glow_ood.scores import mutation


def test_l2_gradient_is_the_gradient_of_the_penalty():
  params = {'step': {'lu': {'l': jnp.full((2, 2), 3.0), 'log_s': jnp.array([0.5, -1.0])},
                     'bias': jnp.array([1.0, -2.0])}}
  grads = jax.tree.map(jnp.ones_like, params)
  out = optimizer_lib.add_l2_gradient(grads, params, 0.5)
  penalty = jax.grad(lambda p: 0.25 * sum(jnp.sum(x**2) for x in jax.tree.leaves(p)))(params)
  for got, g, pen in zip(jax.tree.leaves(out), jax.tree.leaves(grads), jax.tree.leaves(penalty)):
    np.testing.assert_allclose(got, g + pen)
  assert optimizer_lib.add_l2_gradient(grads, params, 0.0) is grads


def _one_step(config, images):
  mesh = parallel.make_mesh()
  keys = train_state_lib.run_keys(config.seed)
  batch = parallel.global_batch(mesh, images)
  state = train_state_lib.create_train_state(config, mesh, keys['init'], batch)
  step = train.make_train_step(config, mesh)
  before = jax.device_get((state.params, state.constants))
  state, metrics = step(state, batch, keys['train'])
  return before, jax.device_get((state.params, state.constants)), jax.device_get(metrics)


def test_background_training_mutates_inputs_and_decays_only_trainable_weights(tiny_config):
  rng = np.random.default_rng(0)
  images = np.zeros((8, 16, 16, 1), np.uint8)
  images[:, 4:12, 4:12] = rng.integers(100, 200, (8, 8, 8, 1))
  tiny_config.train.warmup_steps = 0
  plain = _one_step(tiny_config, images)
  tiny_config.train.mutation_rate = 0.5
  mutated = _one_step(tiny_config, images)
  # Half the pixels uniform: a far worse fit of the same model at the same step.
  assert mutated[2]['bits_per_dim'] > plain[2]['bits_per_dim'] + 0.5

  tiny_config.train.mutation_rate = 0.0
  tiny_config.train.weight_decay = 10.0
  decayed = _one_step(tiny_config, images)
  # P and sign are constants, outside params: the decay cannot reach them.
  lu_before = decayed[0][1]['level0_steps']['conv']['lu']
  lu_after = decayed[1][1]['level0_steps']['conv']['lu']
  np.testing.assert_array_equal(lu_after['p'], lu_before['p'])
  np.testing.assert_array_equal(lu_after['sign'], lu_before['sign'])
  # The penalty's gradient dominates: trainable weights move differently than without it.
  assert not np.allclose(decayed[1][0]['level0_steps']['conv']['lu']['l'],
                         plain[1][0]['level0_steps']['conv']['lu']['l'])
  assert decayed[2]['grad_norm'] > plain[2]['grad_norm']


def test_mutation_rates_share_one_compiled_step_and_mutate_as_the_rate_says(tiny_config):
  """Background candidates at different rates lower to one program (one compile for a
  rate search), and the rate passed in is the one applied."""
  mesh = parallel.make_mesh()
  keys = train_state_lib.run_keys(tiny_config.seed)
  images = np.full((8, 16, 16, 1), 7, np.uint8)
  batch = parallel.global_batch(mesh, images)
  state = train_state_lib.create_train_state(tiny_config, mesh, keys['init'], batch)
  programs = {}
  for rate in (0.05, 0.3):
    tiny_config.train.mutation_rate = rate
    programs[rate] = train.make_train_step(tiny_config, mesh).lower(
        state, batch, keys['train']).as_text()
  assert programs[0.05] == programs[0.3]
  tiny_config.train.mutation_rate = 0.0
  plain = train.make_train_step(tiny_config, mesh).lower(state, batch, keys['train']).as_text()
  assert plain != programs[0.05]  # no mutation code where nothing mutates

  # The traced rate draws exactly what the number draws, and about that fraction.
  key = jax.random.PRNGKey(3)
  big = jnp.full((64, 32, 32, 1), 7, jnp.uint8)
  for rate in (0.05, 0.3):
    traced = jax.jit(mutation.mutate_pixels)(key, big, np.float32(rate))
    np.testing.assert_array_equal(traced, mutation.mutate_pixels(key, big, rate))
    changed = float(jnp.mean(traced != 7))
    assert abs(changed - rate * 255 / 256) < 0.01, (rate, changed)
