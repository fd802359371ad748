"""A model kind added from outside the package: one module plus one registry entry.

The toy kind below (independent per-pixel Gaussians, a density on R^D and so a bound on
[0, 1)^D) is written here and registered in glow_ood.model_kinds.KINDS, nothing else:
the config schema, validation, the tiny config, training, evaluation files and the
recorded-config check pick it up from the entry.
"""

import dataclasses
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import config_validation
from glow_ood import data
from glow_ood import eval_sets
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import model_kinds
from glow_ood import train
from glow_ood import workdir_config
from glow_ood.configs import tiny
from glow_ood.user_errors import ConfigError


@dataclasses.dataclass
class ToyOutput:
  log_px: jax.Array
  mean_abs_z: jax.Array

  def terms(self):
    return {'log_px': self.log_px, 'mean_abs_z': self.mean_abs_z}


class PixelGaussian(nn.Module):
  """log p(y) = sum over pixels of log N(y; mu, sigma^2), mu and log sigma learnt per pixel."""
  image_shape: tuple[int, int, int] = (16, 16, 1)
  init_log_scale: float = -1.0
  parameterisation: Literal['per_pixel', 'shared'] = 'per_pixel'
  chunk: int = 1  # how the step is executed only (a stand-in for Glow's recompute)

  def setup(self):
    shape = self.image_shape if self.parameterisation == 'per_pixel' else (1, 1, 1)
    self.mu = self.param('mu', nn.initializers.constant(0.5), shape)
    self.log_scale = self.param('log_scale', nn.initializers.constant(self.init_log_scale),
                                shape)

  def __call__(self, y, train=False):
    del train
    z = (y - self.mu) / jnp.exp(self.log_scale)
    log_p = -0.5 * z ** 2 - self.log_scale - 0.5 * math.log(2 * math.pi)
    return ToyOutput(log_px=log_p.reshape(y.shape[0], -1).sum(-1),
                     mean_abs_z=jnp.abs(z).reshape(y.shape[0], -1).mean(-1))

  def evaluate(self, y):
    return self(y)

  def sample(self, key, image_shape, num, temperature):
    noise = jax.random.normal(key, (num,) + tuple(image_shape))
    return jnp.clip(self.mu + temperature * jnp.exp(self.log_scale) * noise, 0.0, 1.0 - 1e-6)


TOY = model_kinds.ModelKind(
    'toy', PixelGaussian, 'Pixel Gaussian', 'a per-pixel Gaussian density (bound)',
    sizes={'tiny': dict(init_log_scale=-1.0)}, execution_only=('chunk',))


@pytest.fixture
def toy_registered(monkeypatch):
  monkeypatch.setitem(model_kinds.KINDS, 'toy', TOY)


def _config(idx_dir):
  config = tiny.get_config('toy')
  config.data.path = idx_dir
  config.train.num_steps = 20
  config.train.learning_rate = 3e-2
  config.train.checkpoint_every = 10
  return config


def test_the_entry_is_the_schema(toy_registered):
  config = tiny.get_config('toy')
  assert dict(config.model) == {'kind': 'toy', 'init_log_scale': -1.0,
                                'parameterisation': 'per_pixel', 'chunk': 1}
  assert set(config_validation.known_keys(config, 'model')) == {
      'kind', 'init_log_scale', 'parameterisation', 'chunk'}
  config.model.parameterisation = 'per_row'
  with pytest.raises(ConfigError, match=r"config\.model\.parameterisation='per_row' .*"
                     r"'per_pixel', 'shared'"):
    config_validation.validate_config(config, device_count=1)
  assert model_kinds.KINDS['toy'].names() == ('Pixel Gaussian', 'Pixel Gaussian')
  assert 'model.chunk' in workdir_config.execution_only_model_keys()
  with pytest.raises(ValueError, match='not fields of PixelGaussian'):
    model_kinds.ModelKind('bad', PixelGaussian, 'x', 'y', sizes={'tiny': dict(width=3)})


def test_the_new_kind_trains_and_evaluates(toy_registered, idx_dir, tmp_path):
  config = _config(idx_dir)
  config_validation.validate_config(config, device_count=1)
  workdir = str(tmp_path / 'toy')
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 20
  paths = evaluate.evaluate_checkpoint(config, workdir, eval_sets.resolve(config))
  with np.load(paths['fashion_mnist_test']) as f:
    arrays = {k: f[k] for k in f.files}
  per_image = {k for k, v in arrays.items() if v.ndim >= 1} - set(eval_files.METADATA_KEYS)
  assert per_image == {'log_px', 'mean_abs_z', 'log_p_discrete', 'bits_per_dim'}
  assert arrays['log_px'].shape == (40,)
  np.testing.assert_allclose(arrays['bits_per_dim'],
                             -arrays['log_p_discrete'] / (16 * 16 * math.log(2)), rtol=1e-6)
  # Training moved the means toward the data: the initial model (mu 0.5, sigma e^-1
  # everywhere) scores the same test images worse, by the same formula at the midpoints.
  module = model_kinds.build_model(config)
  initial = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  spec = data.DataSpec(**dict(config.data, augment='none'))
  y = (data.load_array(spec, 'test').astype(np.float32) + 0.5) / 256.0
  initial_bits = float(-module.apply(initial, y).log_px.mean() / (y[0].size * math.log(2)) + 8)
  assert arrays['bits_per_dim'].mean() < initial_bits - 0.5


def test_the_recorded_config_check_reads_the_entry(toy_registered, idx_dir, tmp_path):
  config = _config(idx_dir)
  workdir = str(tmp_path / 'toy')
  workdir_config.prepare(workdir)
  workdir_config.record(config, workdir)
  changed = _config(idx_dir)
  changed.model.chunk = 4  # how the step runs: resuming with it is fine
  workdir_config.check_resume(changed, workdir)
  changed.model.parameterisation = 'shared'  # other parameters: refused
  with pytest.raises(Exception, match=r'config\.model\.parameterisation'):
    workdir_config.check_resume(changed, workdir)
