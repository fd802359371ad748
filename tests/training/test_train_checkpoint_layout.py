"""Checkpoints in earlier layouts load, converted, and training resumes from them in the new one.

Two earlier layouts: one params subtree per flow step ('level{l}_step{k}', before a
level's steps ran under nn.scan and were stacked in 'level{l}_steps'), and, older
still, that with the LU convs' P and sign inside params (before the constants collection).
"""

import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from glow_ood import checkpointing
from glow_ood import checkpoint_migration
from glow_ood import optimizer as optimizer_lib
from glow_ood import parallel
from glow_ood import train
from glow_ood import train_state as train_state_lib
from glow_ood.user_errors import CheckpointRestoreError
from tests.training.conftest import load_checkpoint

_STACKED = re.compile(r'level(\d+)_steps')


def _is_stacked_tree(node):
  return isinstance(node, dict) and any(_STACKED.fullmatch(name) for name in node)


def _per_step(tree):
  """Every params-like tree of `tree` with its stacked steps cut into one subtree per step."""
  def unroll(node):
    out = {}
    for name, sub in node.items():
      match = _STACKED.fullmatch(name)
      if not match:
        out[name] = sub
        continue
      for k in range(jax.tree.leaves(sub)[0].shape[0]):
        out[f'level{match.group(1)}_step{k}'] = jax.tree.map(lambda a, k=k: a[k], sub)
    return out
  return jax.tree.map(lambda n: unroll(n) if _is_stacked_tree(n) else n, tree,
                      is_leaf=_is_stacked_tree)


def _per_step_layout(state):
  return train_state_lib.TrainState(
      step=state.step, params=_per_step(state.params), opt_state=_per_step(state.opt_state),
      ema_params=_per_step(state.ema_params), constants=_per_step(state.constants))


def _oldest_layout(state, config) -> dict:
  """Per step, and P and sign inside every params tree (no constants field)."""
  flat = traverse_util.flatten_dict(_per_step(state.params))
  flat.update(traverse_util.flatten_dict(_per_step(state.constants)))
  merged = traverse_util.unflatten_dict(flat)
  return {'step': state.step, 'params': merged,
          'opt_state': optimizer_lib.make_optimizer(config.train).init(merged),
          'ema_params': merged}


def _save(workdir, tree):
  with checkpointing.make_manager(workdir) as manager:
    manager.save(2, args=ocp.args.Composite(**{
        checkpointing.STATE: ocp.args.StandardSave(tree),
        checkpointing.META: ocp.args.JsonSave({'step': 2, 'data_position': 2}),
    }))
    manager.wait_until_finished()


def _assert_equal_trees(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_earlier_checkpoint_layouts_are_converted_on_load_and_resumed(tiny_config, tmp_path):
  tiny_config.train.num_steps = 2
  tiny_config.train.ema_decay = 0.9
  state = parallel.to_host(train.train_and_evaluate(tiny_config, str(tmp_path / 'new')))
  assert 'level0_step0' in _per_step(state.params)  # the old layout really is written

  per_step = str(tmp_path / 'per_step')
  _save(per_step, _per_step_layout(state))
  restored, meta = load_checkpoint(tiny_config, per_step)
  assert meta['step'] == 2
  for got, want in ((restored.params, state.params), (restored.constants, state.constants),
                    (restored.ema_params, state.ema_params),
                    (restored.opt_state, state.opt_state)):
    _assert_equal_trees(got, want)

  oldest = str(tmp_path / 'oldest')
  _save(oldest, _oldest_layout(state, tiny_config))
  restored, meta = load_checkpoint(tiny_config, oldest)
  assert meta['step'] == 2
  assert set(restored.params['level0_steps']['conv']['lu']) == {'l', 'u', 'log_s'}
  for got, want in ((restored.params, state.params), (restored.constants, state.constants),
                    (restored.ema_params, state.params)):
    _assert_equal_trees(got, want)

  # Resuming from it trains on and saves the new layout.
  tiny_config.train.num_steps = 4
  train.train_and_evaluate(tiny_config, oldest)
  assert checkpointing.available_steps(oldest) == [2, 4]
  with checkpointing.make_manager(oldest, read_only=True) as manager:
    stored = checkpointing._stored_shapes(manager, 4)  # pylint: disable=protected-access
  assert ('params', 'level0_steps', 'actnorm', 'bias') in stored
  assert not checkpoint_migration.has_unrolled_steps(stored)
  resumed, _ = load_checkpoint(tiny_config, oldest, 4)
  _assert_equal_trees(resumed.constants, state.constants)


def test_per_step_checkpoint_of_another_depth_is_refused_with_the_steps_named(tiny_config,
                                                                             tmp_path):
  tiny_config.train.num_steps = 1
  state = parallel.to_host(train.train_and_evaluate(tiny_config, str(tmp_path / 'new')))
  workdir = str(tmp_path / 'deeper')
  _save(workdir, _per_step_layout(state))
  tiny_config.model.steps_per_level = 3
  with pytest.raises(CheckpointRestoreError, match='does not fit the model') as error:
    load_checkpoint(tiny_config, workdir)
  assert 'level0_step2' in str(error.value)
