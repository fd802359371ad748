"""Train state, optimizer and model initialisation (ActNorm from the global first batch)."""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'optax')  # before the imports it checks

import re
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import optax

from glow_ood import likelihood
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


def learning_rate_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the peak rate, then constant."""
  peak = train_cfg.learning_rate
  if train_cfg.warmup_steps <= 0:
    return optax.constant_schedule(peak)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, train_cfg.warmup_steps),
       optax.constant_schedule(peak)],
      boundaries=[train_cfg.warmup_steps])


def add_l2_gradient(grads, params, weight_decay: float):
  """grads + weight_decay * params: the gradient of a loss penalty weight_decay/2 |params|^2.

  Done on the gradient, not as an optimizer transform, so the optimizer state (and so a
  checkpoint's layout) is the same with and without it. Only the trainable collection is
  decayed; the LU 1x1 conv's permutation and signs live in 'constants', out of its reach.
  """
  if weight_decay <= 0:
    return grads
  return jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(train_cfg)
  optimizers = {'adam': optax.adam, 'adamax': optax.adamax, 'rmsprop': optax.rmsprop}
  if train_cfg.optimizer not in optimizers:
    raise ValueError(f'config.train.optimizer={train_cfg.optimizer!r} is not valid: '
                     f'choose one of {", ".join(optimizers)}.')
  transforms = []
  if train_cfg.grad_clip_norm > 0:
    transforms.append(optax.clip_by_global_norm(train_cfg.grad_clip_norm))
  transforms.append(optimizers[train_cfg.optimizer](schedule))
  return optax.chain(*transforms)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, config.data.channels)


def num_dims(config: ml_collections.ConfigDict) -> int:
  h, w, c = image_shape(config)
  return h * w * c


def model_from_config(config: ml_collections.ConfigDict):
  return model_kinds.build_model(config)


def _init_fn(config: ml_collections.ConfigDict):
  model = model_from_config(config)
  optimizer = make_optimizer(config.train)
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


# Checkpoints written before the 'constants' collection kept the LU convs' P and sign
# inside params (and so inside the optimizer state and EMA params too).
_LEGACY_CONSTANT_NAMES = ('p', 'sign')


def _merge(params, constants):
  flat = traverse_util.flatten_dict(params)
  flat.update(traverse_util.flatten_dict(constants))
  return traverse_util.unflatten_dict(flat)


def _split(merged):
  flat = traverse_util.flatten_dict(merged)
  fixed = {k: v for k, v in flat.items() if k[-2:-1] == ('lu',) and k[-1] in _LEGACY_CONSTANT_NAMES}
  rest = {k: v for k, v in flat.items() if k not in fixed}
  return traverse_util.unflatten_dict(rest), traverse_util.unflatten_dict(fixed)


def _map_params_like(tree, params_like, fn):
  """Applies fn to every subtree of `tree` shaped like `params_like` (optimizer moments...)."""
  treedef = jax.tree.structure(params_like)
  matches = lambda node: jax.tree.structure(node) == treedef
  return jax.tree.map(lambda node: fn(node) if matches(node) else node, tree, is_leaf=matches)


def legacy_abstract_state(abstract_state: TrainState) -> dict:
  """The abstract state in the layout of checkpoints from before the constants collection
  (a dict: those had no constants field)."""
  merged = _merge(abstract_state.params, abstract_state.constants or {})
  to_merged = lambda tree: _map_params_like(tree, abstract_state.params, lambda _: merged)
  return {'step': abstract_state.step, 'params': merged,
          'opt_state': to_merged(abstract_state.opt_state),
          'ema_params': to_merged(abstract_state.ema_params)}


def from_legacy_state(legacy: dict) -> TrainState:
  """Moves P and sign out of params (and drops their optimizer state and EMA copies)."""
  params, constants = _split(legacy['params'])
  constants = constants or None
  trainable = lambda tree: _map_params_like(tree, legacy['params'], lambda t: _split(t)[0])
  return TrainState(step=legacy['step'], params=params, opt_state=trainable(legacy['opt_state']),
                    ema_params=trainable(legacy['ema_params']), constants=constants)


# Checkpoints written before a level's steps ran under nn.scan kept one subtree per step,
# params['level{l}_step{k}'] (and so in the optimizer state, EMA params and constants);
# now a level's steps are one subtree, params['level{l}_steps'], stacked on a leading axis.
_UNROLLED_STEP = re.compile(r'level(\d+)_step(\d+)')
_STACKED_STEPS = re.compile(r'level(\d+)_steps')


def has_unrolled_steps(keys) -> bool:
  """Whether stored key paths (tuples of names, collection first) are in the per-step layout."""
  return any(len(key) > 1 and _UNROLLED_STEP.fullmatch(key[1]) for key in keys)


def _unstack_steps(tree):
  """{'level{l}_steps': [K, ...] leaves} -> {'level{l}_step{k}': [...] leaves} (abstract)."""
  out = {}
  for name, sub in tree.items():
    match = _STACKED_STEPS.fullmatch(name)
    if not match:
      out[name] = sub
      continue
    num_steps = jax.tree.leaves(sub)[0].shape[0]
    for k in range(num_steps):
      out[f'level{match.group(1)}_step{k}'] = jax.tree.map(
          lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype, sharding=s.sharding), sub)
  return out


def _stack_steps(tree):
  """The inverse of `_unstack_steps`, on arrays: per-step subtrees stacked in step order."""
  out, steps = {}, {}
  for name, sub in tree.items():
    match = _UNROLLED_STEP.fullmatch(name)
    if match:
      steps.setdefault(int(match.group(1)), {})[int(match.group(2))] = sub
    else:
      out[name] = sub
  for level, per_step in steps.items():
    ordered = [per_step[k] for k in sorted(per_step)]
    out[f'level{level}_steps'] = jax.tree.map(lambda *xs: jnp.stack(xs), *ordered)
  return out


def unrolled_abstract_state(abstract_state: TrainState) -> TrainState:
  """The abstract state in the per-step layout of checkpoints from before the scanned steps."""
  per_step = lambda tree: _map_params_like(tree, abstract_state.params, _unstack_steps)
  return abstract_state.replace(
      params=_unstack_steps(abstract_state.params), opt_state=per_step(abstract_state.opt_state),
      ema_params=per_step(abstract_state.ema_params),
      constants=(_unstack_steps(abstract_state.constants)
                 if abstract_state.constants else abstract_state.constants))


def from_unrolled_state(state: TrainState) -> TrainState:
  """Stacks a per-step state's steps, level by level, into the scanned layout."""
  stacked = lambda tree: _map_params_like(tree, state.params, _stack_steps)
  return state.replace(
      params=_stack_steps(state.params), opt_state=stacked(state.opt_state),
      ema_params=stacked(state.ema_params),
      constants=_stack_steps(state.constants) if state.constants else state.constants)
