"""MatmulConv computes what flax's nn.Conv computes, with the same parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.flows.conv import MatmulConv


@pytest.mark.parametrize('kernel_size, cin, cout', [
    (3, 2, 16),   # thin input: patches side
    (3, 16, 4),   # thin output: partial-sums side
    (3, 5, 5),
    (1, 8, 6),
])
def test_matmul_conv_equals_flax_conv_and_its_gradients(kernel_size, cin, cout):
  with jax.enable_x64(True):
    _check_against_flax(kernel_size, cin, cout)


def _check_against_flax(kernel_size, cin, cout):
  x = jax.random.normal(jax.random.key(0), (3, 6, 5, cin), jnp.float64)
  ours = MatmulConv(cout, kernel_size)
  ref = nn.Conv(cout, (kernel_size, kernel_size), padding='SAME', param_dtype=jnp.float64)
  variables = ref.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda a: a + 0.3, variables)  # a non-zero bias too
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-12,
                             atol=1e-12)
  probe = jax.random.normal(jax.random.key(2), (3, 6, 5, cout), jnp.float64)
  loss = lambda module: lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)) * probe)
  grads_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  grads_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(grads_ours), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_matmul_conv_init_equals_flax_conv_init():
  x = jnp.zeros((2, 4, 4, 3))
  ours = MatmulConv(7, 3).init(jax.random.key(3), x)
  ref = nn.Conv(7, (3, 3), padding='SAME').init(jax.random.key(3), x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)
