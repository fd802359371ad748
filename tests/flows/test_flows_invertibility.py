"""Round trip and log-det against autodiff, for every case in the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.flows.flow_registry import CASES, forward, init_perturbed, inverse, sample_input, to_float64

IDS = [c.name for c in CASES]


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_round_trip_float32(case):
  module, variables = init_perturbed(case)
  x = sample_input(case, seed=7)
  _, logdet, y = jax.jit(lambda v, x: forward(case, module, v, x))(variables, x)
  x_back, inv_logdet = jax.jit(lambda v, y: inverse(case, module, v, y))(variables, y)
  np.testing.assert_allclose(x_back, x, atol=1e-5, rtol=0)
  assert logdet.shape == (x.shape[0],)
  if inv_logdet is not None:
    np.testing.assert_allclose(inv_logdet, -logdet, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_logdet_matches_autodiff_jacobian_float64(case):
  with jax.enable_x64(True):
    module, variables = init_perturbed(case)
    variables = to_float64(variables)
    x = sample_input(case, seed=3, dtype=jnp.float64)
    _, logdet, _ = forward(case, module, variables, x)
    assert logdet.dtype == jnp.float64
    for i in range(x.shape[0]):
      xi = x[i:i + 1]
      flat_map = lambda v: forward(case, module, variables, v.reshape(xi.shape))[0][0]
      jac = jax.jacfwd(flat_map)(xi.reshape(-1))
      assert jac.shape[0] == jac.shape[1] == xi.size
      sign, expected = jnp.linalg.slogdet(jac)
      assert sign != 0
      np.testing.assert_allclose(logdet[i], expected, rtol=1e-9, atol=1e-9)


def test_registry_covers_every_layer_kind():
  names = ' '.join(IDS)
  for needed in ('ActNorm', 'InvConv1x1-plain', 'InvConv1x1-LU', 'AffineCoupling-glow',
                 'AffineCoupling-highway', 'AdditiveCoupling-glow', 'Squeeze', 'Glow-affine',
                 'CVGlow-additive'):
    assert needed in names
