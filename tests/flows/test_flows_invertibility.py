"""Round trip and log-det against autodiff, for every case in the registry."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import flows
from glow_ood.flows.glow import COUPLINGS, INVCONVS
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
    one_shape = (1,) + x.shape[1:]
    # One compiled Jacobian for every example (eager jacfwd of a whole Glow is slow).
    jacobian = jax.jit(jax.jacfwd(
        lambda v: forward(case, module, variables, v.reshape(one_shape))[0][0]))
    for i in range(x.shape[0]):
      xi = x[i:i + 1]
      jac = jacobian(xi.reshape(-1))
      assert jac.shape[0] == jac.shape[1] == xi.size
      sign, expected = jnp.linalg.slogdet(jac)
      assert sign != 0
      np.testing.assert_allclose(logdet[i], expected, rtol=1e-9, atol=1e-9)


def _exported_layer_classes():
  return {obj for obj in vars(flows).values()
          if isinstance(obj, type) and issubclass(obj, flows.InvertibleLayer)
          and obj is not flows.InvertibleLayer}


LAYER_CASES = [c for c in CASES if c.kind == 'layer']


def test_every_exported_layer_is_in_the_registry():
  # A new layer kind exported without a registry case would skip every check above.
  covered = {type(case.make()) for case in LAYER_CASES}
  assert _exported_layer_classes() - covered == set()
  # And the whole model is checked in every coupling x 1x1-conv combination.
  glows = {(m.coupling, m.invconv) for m in (c.make() for c in CASES if c.kind == 'glow')}
  assert glows == set(itertools.product(COUPLINGS, INVCONVS))


@pytest.mark.parametrize('case', LAYER_CASES, ids=[c.name for c in LAYER_CASES])
def test_layers_speak_one_interface(case):
  """layer(x) is forward(x), layer(y, inverse=True) is inverse(y), log-dets are [B]."""
  module, variables = init_perturbed(case)
  x = sample_input(case, seed=9)
  y, logdet = module.apply(variables, x)
  y_fwd, logdet_fwd = module.apply(variables, x, method='forward')
  np.testing.assert_array_equal(y, y_fwd)
  np.testing.assert_array_equal(logdet, logdet_fwd)
  assert logdet.shape == (x.shape[0],)
  x_back, logdet_back = module.apply(variables, y, inverse=True)
  x_inv, logdet_inv = module.apply(variables, y, method='inverse')
  np.testing.assert_array_equal(x_back, x_inv)
  np.testing.assert_array_equal(logdet_back, logdet_inv)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
