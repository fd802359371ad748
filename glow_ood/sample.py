"""Sample grids at chosen temperatures: workdir/samples/step_XXXXXX_T0.7.png."""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint', 'PIL')  # before the imports it checks

import math
import os

import jax
import ml_collections
import numpy as np
from PIL import Image

from glow_ood import atomic_files
from glow_ood import config_validation
from glow_ood import evaluate
from glow_ood import likelihood
from glow_ood import parallel
from glow_ood import train_state as train_state_lib
from glow_ood.flows.glow import Glow

_SAMPLE_FNS = {}


def _sample_fn(config: ml_collections.ConfigDict, mesh):
  """Jitted (variables, key, temperature) -> images y [num, H, W, C], replicated."""
  cache_key = (config.to_json(), mesh)
  if cache_key not in _SAMPLE_FNS:
    model = train_state_lib.model_from_config(config)
    shape = train_state_lib.image_shape(config)
    num = config.sample.num

    def fn(variables, key, temperature):
      return model.apply(variables, key, shape, num, temperature, method=Glow.sample)

    replicated = parallel.replicated(mesh)
    _SAMPLE_FNS[cache_key] = jax.jit(fn, in_shardings=(replicated, replicated, replicated),
                                     out_shardings=replicated)
  return _SAMPLE_FNS[cache_key]


def temperatures(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  value = config.sample.temperatures
  return (float(value),) if isinstance(value, (int, float)) else tuple(float(t) for t in value)


def tile(images_uint8: np.ndarray) -> np.ndarray:
  """[N, H, W, C] -> one near-square grid [rows*H, cols*W, C], 1-pixel gaps."""
  num, height, width, channels = images_uint8.shape
  cols = math.ceil(math.sqrt(num))
  rows = math.ceil(num / cols)
  grid = np.zeros((rows * (height + 1) - 1, cols * (width + 1) - 1, channels), np.uint8)
  for index, image in enumerate(images_uint8):
    row, col = divmod(index, cols)
    grid[row * (height + 1):row * (height + 1) + height,
         col * (width + 1):col * (width + 1) + width] = image
  return grid


def sample_grids(config: ml_collections.ConfigDict, mesh, variables,
                 key: jax.Array) -> dict[float, np.ndarray]:
  """{temperature: uint8 grid [H', W', C]}; the same key at every temperature."""
  fn = _sample_fn(config, mesh)
  grids = {}
  for temperature in temperatures(config):
    y = np.asarray(jax.device_get(fn(variables, key, np.float32(temperature))))
    y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)  # a diverged sample shows as black
    grids[temperature] = tile(likelihood.to_uint8(y, config.n_bits))
  return grids


def sample_path(workdir: str, step: int, temperature: float) -> str:
  return os.path.join(workdir, 'samples', f'step_{step:06d}_T{temperature}.png')


def save_png(grid: np.ndarray, path: str) -> None:
  """Writes atomically (temporary file, then rename)."""
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  with atomic_files.atomic_write(path, 'wb') as f:
    image.save(f, format='PNG')


def write_samples(config: ml_collections.ConfigDict, workdir: str,
                  step: int | None = None) -> list[str]:
  """Sample grids from a checkpoint (default config.eval.checkpoint_step, -1 = latest)."""
  config_validation.validate_config(config, device_count=jax.device_count(), check_data=False)
  mesh = parallel.make_mesh()
  variables, ckpt_step = evaluate.load_state_for_eval(config, workdir, mesh, step)
  keys = train_state_lib.run_keys(config.seed)
  grids = sample_grids(config, mesh, variables, jax.random.fold_in(keys['sample'], ckpt_step))
  paths = []
  for temperature, grid in grids.items():
    path = sample_path(workdir, ckpt_step, temperature)
    if parallel.is_main_process():
      save_png(grid, path)
    paths.append(path)
  return paths
