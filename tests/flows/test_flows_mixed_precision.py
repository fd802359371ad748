"""model.dtype='bfloat16': the coupling nets run in bf16, everything that is summed stays fp32."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from glow_ood import flows
from tests.flows.flow_registry import FlowCase, init_perturbed


def test_bfloat16_nets_keep_bits_per_dim_and_float32_terms():
  make = lambda dtype: flows.Glow(2, 2, 'affine', 'lu', 'glow', 16, dtype=dtype)
  case = FlowCase('glow', lambda: make('float32'), (8, 16, 16, 1), 'glow')
  _, variables = init_perturbed(case, scale=0.05)
  y = jax.random.uniform(jax.random.key(7), case.shape)
  out32 = make('float32').apply(variables, y)
  out16 = make('bfloat16').apply(variables, y)
  for leaf in [out16.log_px, out16.log_pz, *out16.logdet.values(), *out16.latents]:
    assert leaf.dtype == jnp.float32
  # The nets really ran in bf16 ...
  assert not np.array_equal(out16.logdet['coupling'], out32.logdet['coupling'])
  # ... and bits/dim moved by far less than 0.01.
  bits = lambda out: -np.asarray(out.log_px) / (16 * 16 * math.log(2))
  np.testing.assert_allclose(bits(out16), bits(out32), atol=0.01)
  grads = jax.grad(lambda v: make('bfloat16').apply(v, y).log_px.mean())(variables)
  for leaf in jax.tree.leaves(grads):
    assert leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))
