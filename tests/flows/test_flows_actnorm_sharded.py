"""ActNorm's data-dependent init under a batch sharded over 4 devices uses the global batch."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from glow_ood import flows

_SCRIPT = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from glow_ood import flows
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    x = np.load(sys.argv[1])
    x_sharded = jax.device_put(x, NamedSharding(mesh, P('data')))
    assert len(x_sharded.addressable_shards) == 4
    model = flows.Glow(2, 2, 'affine', 'lu', 'glow', 8)
    variables = jax.jit(model.init)(jax.random.key(0), x_sharded)
    flat = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
    np.savez(sys.argv[2], **flat)
''')


def _batch():
  rng = np.random.default_rng(0)
  # Each device's quarter of the batch has different statistics, so a per-device init would differ.
  parts = [rng.uniform(0, 1, (4, 8, 8, 1)) * (i + 1) * 0.25 for i in range(4)]
  return np.concatenate(parts).astype(np.float32)


def test_actnorm_init_on_four_devices_equals_single_device(tmp_path):
  x = _batch()
  np.save(tmp_path / 'x.npy', x)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4 '
             '--xla_cpu_use_fusion_emitters=false',
             JAX_PLATFORMS='cpu')
  subprocess.run([sys.executable, '-c', _SCRIPT, str(tmp_path / 'x.npy'), str(tmp_path / 'p.npz')],
                 check=True, env=env, cwd=os.getcwd())
  sharded = np.load(tmp_path / 'p.npz')

  model = flows.Glow(2, 2, 'affine', 'lu', 'glow', 8)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  single = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  assert set(single) == set(sharded.files)
  for name, value in single.items():
    np.testing.assert_allclose(sharded[name], value, rtol=1e-5, atol=1e-6, err_msg=name)

  # And the first ActNorm's statistics are the whole batch's, not one device's quarter.
  first = flows.squeeze(x - 0.5)
  # The level's steps are stacked on a leading axis; step 0 is the first ActNorm.
  bias = single["['params']['level0_steps']['actnorm']['bias']"][0]
  np.testing.assert_allclose(bias, -first.mean(axis=(0, 1, 2)), rtol=1e-5)
  assert not np.allclose(bias, -first[:4].mean(axis=(0, 1, 2)), rtol=1e-2)
