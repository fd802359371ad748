"""One Evaluator per model: the train loop's periodic evaluation uses the caller's, so the
pair pipeline builds and compiles each model's forward pass once."""

import pytest

from glow_ood import config_validation
from glow_ood import evaluate
from glow_ood import train
from glow_ood.experiment import eval_plan
from glow_ood.experiment import model_runs


@pytest.fixture
def constructions(monkeypatch):
  """Counts Evaluator constructions (every module reaches the class through glow_ood.evaluate)."""
  count = {'n': 0}
  init = evaluate.Evaluator.__init__

  def counting_init(self, *args, **kwargs):
    count['n'] += 1
    init(self, *args, **kwargs)
  monkeypatch.setattr(evaluate.Evaluator, '__init__', counting_init)
  return count


def _compiled(evaluator: evaluate.Evaluator) -> int:
  """Programs the evaluator's uint8 forward pass has compiled (over modes and shapes)."""
  return sum(fn._cache_size() for fn in evaluator._fns.values())  # pylint: disable=protected-access


def test_train_uses_the_evaluator_it_is_given(tiny_config, tmp_path, constructions):
  config = tiny_config
  config.train.num_steps = 2
  config.train.eval_every = 1
  evaluator = evaluate.Evaluator(config)
  assert constructions['n'] == 1
  train.train_and_evaluate(config, str(tmp_path / 'given'), evaluator=evaluator)
  assert constructions['n'] == 1      # none built inside
  assert _compiled(evaluator) == 1    # two periodic evaluations, one program
  # The evaluation afterwards, with the same evaluator, compiles nothing more.
  sets = config_validation.validate_config(config, device_count=1)
  evaluate.evaluate_checkpoint(config, str(tmp_path / 'given'), sets, evaluator=evaluator)
  assert constructions['n'] == 1 and _compiled(evaluator) == 1

  # Without one, training builds its own.
  train.train_and_evaluate(config, str(tmp_path / 'own'))
  assert constructions['n'] == 2


def test_train_refuses_another_models_evaluator(tiny_config, tmp_path):
  other = tiny_config.copy_and_resolve_references()
  other.model.hidden_channels += 1
  with pytest.raises(ValueError, match='another model'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'),
                             evaluator=evaluate.Evaluator(other))


def test_pipeline_member_builds_one_evaluator(tiny_config, tmp_path, constructions):
  """model_runs.run_member (as run_model) trains and evaluates with one Evaluator: one
  construction, one compiled forward pass, returned for the attacks to reuse."""
  config = tiny_config
  config.train.num_steps = 2
  config.train.eval_every = 2
  (entry,) = config_validation.validate_config(config, device_count=1)
  sets = [eval_plan.ExperimentSet('test', entry)]
  member = model_runs.run_member(config, str(tmp_path / 'member'), sets, {}, reuse=False)
  assert constructions['n'] == 1
  assert _compiled(member['evaluator']) == 1
  assert member['step'] == 2 and set(member['final']) == {'test'}
