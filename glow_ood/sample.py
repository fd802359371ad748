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
from glow_ood import evaluate
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood import parallel
from glow_ood import train_state as train_state_lib


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


def sample_sharding(mesh, num: int):
  """Where the `num` drawn images go: split over the devices where `num` divides by them.

  XLA partitions the sampling program like its output, so each device draws its own
  images; with a replicated output every device would draw every image (PixelCNN++'s
  pixel-by-pixel sampling of 16 images took 91 s instead of 45 on 2 CPU devices). The
  random draws are the same either way (threefry keys do not depend on the split).
  """
  if num % mesh.size:
    return parallel.replicated(mesh)
  return parallel.per_example_output(mesh)


class Sampler:
  """Sample grids of one config's model: compiled once, reused at every temperature and step."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    self.config = config
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    model = model_kinds.build_model(config, evaluation=True)
    shape = train_state_lib.image_shape(config)
    num = config.sample.num

    def fn(variables, key, temperature):
      return model.apply(variables, key, shape, num, temperature, method='sample')

    replicated = parallel.replicated(self.mesh)
    self._fn = jax.jit(fn, in_shardings=(replicated, replicated, replicated),
                       out_shardings=sample_sharding(self.mesh, num))

  def grids(self, variables, key: jax.Array) -> dict[float, np.ndarray]:
    """{temperature: uint8 grid [H', W', C]}; the same key at every temperature."""
    grids = {}
    for temperature in temperatures(self.config):
      y = np.asarray(jax.device_get(self._fn(variables, key, np.float32(temperature))))
      y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)  # a diverged sample shows as black
      grids[temperature] = tile(likelihood.to_uint8(y, self.config.n_bits))
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
  sampler = Sampler(config)
  variables, ckpt_step = evaluate.load_state_for_eval(config, workdir, sampler.mesh, step)
  keys = train_state_lib.run_keys(config.seed)
  grids = sampler.grids(variables, jax.random.fold_in(keys['sample'], ckpt_step))
  paths = []
  for temperature, grid in grids.items():
    path = sample_path(workdir, ckpt_step, temperature)
    if parallel.is_main_process():
      save_png(grid, path)
    paths.append(path)
  return paths
