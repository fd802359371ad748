"""Checkpoints written before the constants collection (P and sign inside params) load,
converted, and training resumes from them in the new layout."""

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from glow_ood import checkpointing
from glow_ood import parallel
from glow_ood import train
from glow_ood import train_state as train_state_lib
from tests.training.conftest import load_checkpoint


def _legacy_layout(state, config) -> dict:
  """The state as the earlier code stored it: P and sign inside every params tree."""
  flat = traverse_util.flatten_dict(state.params)
  flat.update(traverse_util.flatten_dict(state.constants))
  merged = traverse_util.unflatten_dict(flat)
  return {'step': state.step, 'params': merged,
          'opt_state': train_state_lib.make_optimizer(config.train).init(merged),
          'ema_params': merged}


def test_legacy_checkpoint_is_converted_on_load_and_resumed(tiny_config, tmp_path):
  tiny_config.train.num_steps = 2
  tiny_config.train.ema_decay = 0.9
  state = parallel.to_host(train.train_and_evaluate(tiny_config, str(tmp_path / 'new')))
  workdir = str(tmp_path / 'legacy')
  with checkpointing.make_manager(workdir) as manager:
    manager.save(2, args=ocp.args.Composite(**{
        checkpointing.STATE: ocp.args.StandardSave(_legacy_layout(state, tiny_config)),
        checkpointing.META: ocp.args.JsonSave({'step': 2, 'data_position': 2}),
    }))
    manager.wait_until_finished()

  restored, meta = load_checkpoint(tiny_config, workdir)
  assert meta['step'] == 2
  assert set(restored.params['level0_step0']['conv']['lu']) == {'l', 'u', 'log_s'}
  for got, want in ((restored.params, state.params), (restored.constants, state.constants),
                    (restored.ema_params, state.params)):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)

  # Resuming from it trains on and saves the new layout.
  tiny_config.train.num_steps = 4
  train.train_and_evaluate(tiny_config, workdir)
  assert checkpointing.available_steps(workdir) == [2, 4]
  resumed, _ = load_checkpoint(tiny_config, workdir, 4)
  for a, b in zip(jax.tree.leaves(resumed.constants), jax.tree.leaves(state.constants)):
    np.testing.assert_array_equal(a, b)
