"""Sampling over several devices: each device draws its own images, and the images are the
ones a single device draws. Checked on 2 forced CPU devices in a subprocess (the device
count is fixed once JAX starts)."""

import subprocess
import sys
import textwrap

from tests.training.conftest import REPO_ROOT, subprocess_env

_TWO_DEVICES = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from glow_ood import parallel, sample, train_state
    from glow_ood.configs import tiny

    assert jax.device_count() == 2, jax.devices()
    mesh = parallel.make_mesh()
    one_device = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
    for kind in ('pixelcnn', 'glow'):
      config = tiny.get_config(kind)
      config.sample.num = 4
      height, width, _ = train_state.image_shape(config)
      first = np.random.default_rng(0).integers(0, 256, (config.train.batch_size, height, width, 1),
                                                np.uint8)
      state = train_state.create_train_state(config, mesh, jax.random.PRNGKey(0), jnp.asarray(first))
      variables = train_state.eval_variables(state, config)
      key, temperature = jax.random.PRNGKey(5), np.float32(1.0)
      split = sample.Sampler(config, mesh)
      drawn = split._fn(variables, key, temperature)
      assert [s.data.shape[0] for s in drawn.addressable_shards] == [2, 2], kind
      if kind == 'pixelcnn':
        # The pixel loop itself runs on each device's 2 images, not on all 4 twice.
        hlo = split._fn.lower(variables, key, temperature).compile().as_text()
        loops = [line for line in hlo.splitlines()
                 if ' while(' in line and f'"n":"{height * width}"' in line]
        assert len(loops) == 1 and f's32[2,{height},{width},1]' in loops[0], loops
      single = sample.Sampler(config, one_device)
      alone = single._fn(jax.device_put(variables, parallel.replicated(one_device)), key,
                         temperature)
      np.testing.assert_allclose(np.asarray(drawn), np.asarray(alone), atol=1e-6)
      assert (split.grids(variables, key)[1.0] == single.grids(
          jax.device_put(variables, parallel.replicated(one_device)), key)[1.0]).all()

    # A count that does not divide by the devices is drawn whole on each (replicated).
    assert sample.sample_sharding(mesh, 3) == parallel.replicated(mesh)
    assert sample.sample_sharding(mesh, 4) == parallel.batch_sharding(mesh)
    print('sampling split ok')
''')


def test_each_device_draws_its_own_samples_and_they_match_one_devices():
  result = subprocess.run([sys.executable, '-c', _TWO_DEVICES], cwd=REPO_ROOT,
                          env=subprocess_env(devices=2), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'sampling split ok' in result.stdout
