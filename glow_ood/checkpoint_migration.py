"""Reading checkpoints written in earlier layouts into today's TrainState.

Two layouts changed: the LU 1x1 conv's permutation and signs moved from params into the
'constants' collection, and a level's K steps became one scanned subtree. checkpointing
restores into the layout a checkpoint was written in, then converts it with these.
"""

import re

from flax import traverse_util
import jax
import jax.numpy as jnp

from glow_ood.train_state import TrainState


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
