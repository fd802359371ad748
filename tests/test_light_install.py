"""The base install (no extras) is enough for the layers and the likelihood bookkeeping:
they import and run with TensorFlow, TFDS, orbax, clu and optax absent, and the
trainer then says which extra it needs."""

import subprocess
import sys
import textwrap

from tests.training.conftest import REPO_ROOT, subprocess_env

BLOCKED = ('tensorflow', 'tensorflow_datasets', 'orbax', 'clu', 'optax')

SCRIPT = textwrap.dedent('''
    import importlib.abc
    import sys

    BLOCKED = {blocked!r}

    class Absent(importlib.abc.MetaPathFinder):
      """Behaves as if the blocked packages were not installed."""

      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
        return None

    sys.meta_path.insert(0, Absent())

    import jax
    from glow_ood import flows, likelihood

    model = flows.Glow(num_levels=2, steps_per_level=2, hidden_channels=8)
    x = jax.random.randint(jax.random.key(0), (2, 8, 8, 1), 0, 256).astype('uint8')
    y = likelihood.dequantize(jax.random.key(1), likelihood.reduce_bits(x, 5), 5)
    variables = model.init(jax.random.key(2), y)
    bpd = likelihood.bits_per_dim(model.apply(variables, y).log_px, 64, 5)
    assert bpd.shape == (2,)
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
    assert not loaded, loaded
    try:
      import glow_ood.train
    except ImportError as error:
      print('TRAIN:', error)
''')


def test_layers_import_and_run_without_the_train_extra():
  result = subprocess.run([sys.executable, '-c', SCRIPT.format(blocked=BLOCKED)],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TRAIN:' in result.stdout and 'pip install "glow_ood[train]"' in result.stdout, (
      result.stdout[-2000:])
