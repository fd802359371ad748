"""Properties of specific layers: initialisation, constant volume, priors, the output record."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import flows
from tests.flows.flow_registry import CASES, init_perturbed, sample_input


def _batch(shape, seed=0, scale=3.0, offset=1.5):
  return scale * jax.random.normal(jax.random.key(seed), shape) + offset


def test_actnorm_init_gives_zero_mean_unit_variance_per_channel():
  x = _batch((16, 5, 5, 3)) * jnp.array([1.0, 10.0, 0.1]) + jnp.array([0.0, -4.0, 7.0])
  module = flows.ActNorm()
  variables = module.init(jax.random.key(0), x, method='forward')
  y, _ = module.apply(variables, x, method='forward')
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_actnorm_logdet_is_spatial_size_times_sum_log_scale():
  x = _batch((4, 3, 2, 2))
  module = flows.ActNorm()
  variables = module.init(jax.random.key(0), x, method='forward')
  _, logdet = module.apply(variables, x, method='forward')
  expected = 3 * 2 * float(jnp.sum(variables['params']['log_scale']))
  np.testing.assert_allclose(logdet, np.full(4, expected), rtol=1e-6)


def test_fresh_additive_coupling_is_identity():
  x = _batch((2, 4, 4, 6))
  for net in ('glow', 'highway'):
    module = flows.AdditiveCoupling(net=net, hidden_channels=8)
    variables = module.init(jax.random.key(1), x, method='forward')
    y, logdet = module.apply(variables, x, method='forward')
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(logdet, np.zeros(2))


def test_fresh_affine_coupling_scales_second_half_by_sigmoid_two():
  x = _batch((2, 4, 4, 6))
  sig2 = 1.0 / (1.0 + math.exp(-2.0))
  for net in ('glow', 'highway'):
    module = flows.AffineCoupling(net=net, hidden_channels=8)
    variables = module.init(jax.random.key(1), x, method='forward')
    y, logdet = module.apply(variables, x, method='forward')
    np.testing.assert_array_equal(y[..., :3], x[..., :3])
    np.testing.assert_allclose(y[..., 3:], x[..., 3:] * sig2, rtol=1e-6)
    np.testing.assert_allclose(logdet, np.full(2, 4 * 4 * 3 * math.log(sig2)), rtol=1e-6)


def test_lu_invconv_starts_as_a_rotation_and_matches_plain_parametrisation():
  x = _batch((2, 3, 3, 4))
  lu = flows.InvConv1x1LU()
  variables = lu.init(jax.random.key(3), x, method='forward')
  w = flows.invconv_matrix(variables['params'], variables['constants'])
  np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)
  # The same matrix through the plain layer gives the same map and log-det.
  y_lu, ld_lu = lu.apply(variables, x, method='forward')
  y_plain, ld_plain = flows.InvConv1x1().apply({'params': {'kernel': w}}, x, method='forward')
  np.testing.assert_allclose(y_lu, y_plain, atol=1e-6)
  np.testing.assert_allclose(ld_lu, ld_plain, atol=1e-5)


def test_lu_fixed_parts_are_constants_not_params():
  x = _batch((2, 3, 3, 4))
  lu = flows.InvConv1x1LU()
  variables = lu.init(jax.random.key(3), x, method='forward')
  assert set(variables['params']['lu']) == {'l', 'u', 'log_s'}
  assert set(variables['constants']['lu']) == {'p', 'sign'}
  loss = lambda v: jnp.sum(lu.apply(v, x, method='forward')[0] ** 2)
  grads = jax.grad(loss)(variables)
  assert float(jnp.abs(grads['params']['lu']['l']).max()) > 0.0
  assert float(jnp.abs(grads['constants']['lu']['p']).max()) == 0.0
  # Without its constants the layer refuses to run rather than invent them.
  with pytest.raises(ValueError, match='constants'):
    lu.apply({'params': variables['params']}, x, method='forward')


def test_squeeze_layout():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  y = flows.squeeze(x)
  assert y.shape == (2, 2, 2, 12)
  # Output channel (dh * 2 + dw) * C + c holds pixel (2i + dh, 2j + dw), channel c.
  for dh in range(2):
    for dw in range(2):
      for c in range(3):
        np.testing.assert_array_equal(y[:, 1, 0, (dh * 2 + dw) * 3 + c], x[:, 2 + dh, dw, c])
  np.testing.assert_array_equal(flows.unsqueeze(y), x)


def _glow_cases(kind):
  return [c for c in CASES if c.kind == 'glow' and c.name.startswith(kind)]


@pytest.mark.parametrize('case', _glow_cases('CVGlow'), ids=lambda c: c.name)
def test_cv_glow_logdet_does_not_depend_on_the_input(case):
  module, variables = init_perturbed(case)
  x1, x2 = sample_input(case, seed=11), 0.3 * sample_input(case, seed=12)
  out1 = module.apply(variables, x1, method='forward')
  out2 = module.apply(variables, x2, method='forward')
  np.testing.assert_allclose(out1.total_logdet, out2.total_logdet, rtol=1e-6)
  np.testing.assert_allclose(out1.total_logdet, out1.total_logdet[0], rtol=1e-6)
  np.testing.assert_array_equal(out1.logdet['coupling'], 0.0)
  assert not np.allclose(out1.log_pz.sum(-1), out2.log_pz.sum(-1))


@pytest.mark.parametrize('case', _glow_cases('Glow-affine'), ids=lambda c: c.name)
def test_affine_glow_logdet_depends_on_the_input(case):
  module, variables = init_perturbed(case)
  out1 = module.apply(variables, sample_input(case, seed=11), method='forward')
  out2 = module.apply(variables, 0.3 * sample_input(case, seed=12), method='forward')
  assert not np.allclose(out1.logdet['coupling'], out2.logdet['coupling'])


def test_glow_output_record_adds_up_and_has_per_level_per_kind_terms():
  case = _glow_cases('Glow-affine-lu')[0]
  module, variables = init_perturbed(case)
  x = sample_input(case, seed=5)
  out = module.apply(variables, x, method='forward')
  levels = module.num_levels
  assert out.log_pz.shape == (x.shape[0], levels)
  assert set(out.logdet) == set(flows.LOGDET_KINDS)
  for v in out.logdet.values():
    assert v.shape == (x.shape[0], levels)
  np.testing.assert_allclose(out.log_px, out.log_pz.sum(-1) + out.total_logdet, rtol=1e-6)
  assert [z.shape[1:] for z in out.latents] == flows.latent_shapes(x.shape[1:], levels)


def test_fresh_glow_prior_is_standard_normal_on_latents():
  model = flows.Glow(2, 1, 'additive', 'plain', 'glow', 8)
  y = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  variables = model.init(jax.random.key(1), y)
  out = model.apply(variables, y)
  for level, z in enumerate(out.latents):
    expected = flows.gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
    np.testing.assert_allclose(out.log_pz[:, level], expected, rtol=1e-5)


def test_sampling_temperature_scales_the_spread():
  model = flows.Glow(2, 1, 'additive', 'plain', 'glow', 8, learn_top_prior=False)
  y = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
  variables = model.init(jax.random.key(1), y)
  key = jax.random.key(2)
  draw = lambda t: model.apply(variables, key, (8, 8, 1), 64, t, method='sample')
  cold, warm = draw(0.0), draw(1.0)
  assert cold.shape == (64, 8, 8, 1)
  # T = 0 gives every sample the same image (all latents at the prior mean).
  np.testing.assert_allclose(cold, jnp.broadcast_to(cold[:1], cold.shape), atol=1e-5)
  assert float(warm.std(axis=0).mean()) > 0.1
  # Sampled latents map back to themselves through forward.
  out = model.apply(variables, warm)
  again = model.apply(variables, out.latents, method='inverse')
  np.testing.assert_allclose(again, warm, atol=1e-4)


def test_bad_inputs_give_clear_errors():
  model = flows.Glow(2, 1)
  with pytest.raises(ValueError, match='divisible by 2\\*\\*num_levels = 4'):
    model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
  with pytest.raises(TypeError, match='dequantized float'):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1), jnp.uint8))
  with pytest.raises(ValueError, match='Glow.coupling must be one of'):
    flows.Glow(2, 1, coupling='affine2').init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
