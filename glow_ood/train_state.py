"""The train state and its initialisation (ActNorm from the global first batch); the
optimizer is glow_ood.optimizer, older checkpoint layouts glow_ood.checkpoint_migration."""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'optax')  # before the imports it checks

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from glow_ood import likelihood
from glow_ood import optimizer as optimizer_lib
from glow_ood import parallel
from glow_ood import model_kinds
from glow_ood.flows.invconv import CONSTANTS


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # [] int32, optimizer steps taken
  params: Any
  opt_state: Any
  ema_params: Any          # Polyak average of params; None when train.ema_decay == 0
  constants: Any = None    # fixed at init (the LU convs' P and sign); no optimizer sees them


def model_variables(params, constants) -> dict:
  """The variables dict for model.apply: trainable params and the fixed constants."""
  variables = {'params': params}
  if constants:
    variables[CONSTANTS] = constants
  return variables


def run_keys(seed: int) -> dict[str, jax.Array]:
  """The independent PRNG streams of a run, all derived from config.seed."""
  names = ('init', 'train', 'eval', 'sample')
  return dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), len(names))))


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, config.data.channels)


def num_dims(config: ml_collections.ConfigDict) -> int:
  h, w, c = image_shape(config)
  return h * w * c


def _init_fn(config: ml_collections.ConfigDict):
  model = model_kinds.build_model(config)
  optimizer = optimizer_lib.make_optimizer(config.train)
  use_ema = config.train.ema_decay > 0

  def init(key, x_uint8):
    init_key, noise_key, model_key = jax.random.split(key, 3)
    y = likelihood.dequantize_uint8(noise_key, x_uint8, config.n_bits)
    # ActNorm statistics come from this batch; under jit with the batch sharded over
    # the mesh, its mean/variance reductions run over the global batch.
    variables = model.init({'params': init_key, **model_kinds.rngs(model_key)}, y)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      ema_params=params if use_ema else None,
                      constants=variables.get(CONSTANTS))
  return init


def create_train_state(config: ml_collections.ConfigDict, mesh, key: jax.Array,
                       first_batch: jax.Array) -> TrainState:
  """Initialises a replicated state from the global first batch (uint8, batch-sharded)."""
  init = jax.jit(_init_fn(config),
                 in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))
  return init(key, first_batch)


def abstract_train_state(config: ml_collections.ConfigDict, mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the train state, computing nothing."""
  batch = jax.ShapeDtypeStruct((config.train.batch_size,) + image_shape(config), jnp.uint8)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  shapes = jax.eval_shape(_init_fn(config), key, batch)
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def eval_variables(state: TrainState, config: ml_collections.ConfigDict) -> dict:
  """Variables for model.apply: EMA params when they exist and config.eval.use_ema, else
  the raw params, with the state's constants."""
  params = state.params
  if state.ema_params is not None and config.eval.use_ema:
    params = state.ema_params
  return model_variables(params, state.constants)
