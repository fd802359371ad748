"""The train step's per-device gradient (parallel.per_device_gradient): on several devices
Glow (a batch mean of per-image losses without random draws) averages one flat gradient in
one all-reduce, and the step equals the automatically partitioned one to round-off; the VAE
(latent draws) and PixelCNN++ (slower that way) keep the automatic step.
Checked on 2 forced CPU devices in a subprocess (the device count is fixed once JAX starts)."""

import subprocess
import sys
import textwrap

from glow_ood import model_kinds
from tests.training.conftest import REPO_ROOT, subprocess_env

_TWO_DEVICES = textwrap.dedent('''
    import dataclasses
    import re
    import jax
    import numpy as np
    from glow_ood import model_kinds, parallel, train, train_state
    from glow_ood.configs import tiny

    assert jax.device_count() == 2, jax.devices()
    mesh = parallel.make_mesh()

    def step(config):
      """(params and metrics after one step, all-reduce operands in the compiled step)."""
      keys = train_state.run_keys(config.seed)
      h, w, c = train_state.image_shape(config)
      images = np.random.default_rng(0).integers(0, 256, (config.train.batch_size, h, w, c),
                                                 np.uint8)
      batch = parallel.global_batch(mesh, images)
      state = train_state.create_train_state(config, mesh, keys['init'], batch)
      train_step = train.make_train_step(config, mesh)
      hlo = train_step.lower(state, batch, keys['train']).compile().as_text()
      # '%name = (f32[..], f32[..]) all-reduce(...)': count the result's operands.
      results = re.findall(r'= (.*?) all-reduce(?:-start)?[(]', hlo)
      operands = sum(r.count('f32[') for r in results)
      state, metrics = train_step(state, batch, keys['train'])
      return jax.device_get((state.params, metrics)), operands

    def automatic(name):
      kinds = dict(model_kinds.KINDS)
      model_kinds.KINDS[name] = dataclasses.replace(kinds[name],
                                                    per_device_gradient=lambda fields: False)
      return kinds

    glow = tiny.get_config('glow')
    glow.train.warmup_steps = 0
    (per_device, metrics), operands = step(glow)
    num_params = len(jax.tree.leaves(per_device))
    saved = automatic('glow')
    (auto, auto_metrics), auto_operands = step(glow)
    model_kinds.KINDS.update(saved)
    # The parameters' operands (one or more each) become one flat gradient; the loss and the
    # metrics' means are reduced as before.
    assert auto_operands - operands >= num_params - 1, (auto_operands, operands, num_params)
    for a, b in zip(jax.tree.leaves(per_device), jax.tree.leaves(auto)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert metrics.keys() == auto_metrics.keys()
    for name in metrics:
      np.testing.assert_allclose(metrics[name], auto_metrics[name], rtol=1e-5, atol=1e-5)

    # The other kinds keep the automatic partitioning: an operand per parameter at least.
    for kind in ('vae', 'pixelcnn'):
      (params, _), kind_operands = step(tiny.get_config(kind))
      assert kind_operands >= len(jax.tree.leaves(params)), (kind, kind_operands)
    print('per-device gradient ok')
''')


def test_per_device_gradient_is_one_all_reduce_and_matches_the_automatic_step():
  result = subprocess.run([sys.executable, '-c', _TWO_DEVICES], cwd=REPO_ROOT,
                          env=subprocess_env(devices=2), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'per-device gradient ok' in result.stdout


def test_which_kinds_take_the_gradient_per_device():
  fields = lambda name, **changes: {**model_kinds.KINDS[name].defaults(), **changes}
  assert model_kinds.KINDS['glow'].per_device_gradient(fields('glow'))
  assert model_kinds.KINDS['glow'].per_device_gradient(fields('glow', coupling='additive'))
  assert not model_kinds.KINDS['vae'].per_device_gradient(fields('vae'))  # latent draws
  # Allowed without dropout, but measured slower on 2 CPU devices.
  assert not model_kinds.KINDS['pixelcnn'].per_device_gradient(fields('pixelcnn',
                                                                     dropout_rate=0.0))
