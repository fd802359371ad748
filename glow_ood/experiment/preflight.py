"""The pair experiment's checks against its workdir and its data, before any compute.

pipeline.check_pair_config checks the config's values; this checks what the config
is about to meet: every model's, member's and background candidate's workdir (a file
where a directory belongs, a recorded config that the overrides contradict) and
every data set the pair reads (present, with its split, large enough for the
training batch). So `--config.glow.n_bits=5` on a workdir trained at 8 bits, or
an OOD set without its split, stops before the first training step, naming the key
and the workdir or file, rather than after hours of training and evaluation.
"""

from __future__ import annotations

import os

import ml_collections

from glow_ood import config_validation
from glow_ood import workdir_config
from glow_ood.experiment import eval_plan
from glow_ood.experiment import model_runs
from glow_ood.user_errors import WorkdirError


def model_workdirs(config: ml_collections.ConfigDict,
                   models: list[str]) -> list[tuple[str, str, ml_collections.ConfigDict]]:
  """(model, name, training config) of every workdir under the pair's workdir that a run
  trains in: each model, its members (background, ensemble seeds) and, where the
  background mutation rate is tuned, each candidate."""
  from glow_ood.experiment import background_tuning  # pylint: disable=g-import-not-at-top
  out = []
  for model in models:
    out.append((model, model, config[model]))
    out.extend((model, name, member)
               for name, member in model_runs.member_configs(config, model).items())
    if model in eval_plan.csv(config.background.models):
      rates = background_tuning.grid(config)
      if len(rates) > 1:
        steps = background_tuning.selection_steps(config, model)
        for rate in rates:
          candidate = model_runs.background_config(config, model, rate)
          candidate.train.num_steps = steps
          out.append((model, background_tuning.candidate_name(model, rate), candidate))
  return out


def check_workdirs(config: ml_collections.ConfigDict, workdir: str, models: list[str]) -> None:
  """A WorkdirError, naming the workdir and the differing config keys, where a model's (or
  member's) existing workdir was trained with settings the config now contradicts."""
  workdir_config.check_usable(workdir)
  for model, name, model_config in model_workdirs(config, models):
    path = os.path.join(workdir, name)
    workdir_config.check_usable(path)
    recorded = workdir_config.load(path) if os.path.isdir(path) else None
    if recorded is None:
      continue
    diffs = workdir_config.differences(recorded, model_config, workdir_config.RESUME_KEYS)
    if not diffs:
      continue
    via = '' if name == model else f' (the config of {name} follows config.{model})'
    raise WorkdirError(
        f'{path} was trained with other settings ({workdir_config.config_path(path)}): '
        f'{workdir_config.differences_text(diffs, prefix=f"config.{model}.")}{via}. Its '
        'checkpoints cannot go on under this config. Drop these overrides to reuse it, or '
        'pass a new --workdir for the whole pair.')


def check_data(config: ml_collections.ConfigDict, models: list[str], *,
               process_count: int = 1) -> None:
  """Every data set the pair reads: each model's training split (against its batch size)
  and test split, and every OOD set's split; headers only, no images are read."""
  seen = set()
  for model in models:
    config_validation.check_training_data(config[model], prefix=f'{model}.',
                                          process_count=process_count)
    for eval_set in eval_plan.eval_sets(config, model):
      entry = eval_set.entry
      # The image shape does not change what is read: check each file and split once.
      data = entry.data
      key = (data.name, data.source, data.path, data.data_dir, entry.split)
      if key in seen:
        continue
      seen.add(key)
      where = (f'{model}.data' if not eval_set.is_ood
               else f'experiment.ood.{eval_set.label}.data')
      config_validation.check_available(entry.data, entry.split, where)


def check(config: ml_collections.ConfigDict, workdir: str, models: list[str], *,
          process_count: int = 1) -> None:
  """check_workdirs, then check_data."""
  check_workdirs(config, workdir, models)
  check_data(config, models, process_count=process_count)


def set_aside_damaged(config: ml_collections.ConfigDict, workdir: str,
                      models: list[str]) -> None:
  """--on_damaged_checkpoint=fallback: in every model's and member's workdir, the newest
  steps that differ from their checksums are kept aside and the run goes on from the
  newest intact one (checkpointing.set_aside_damaged_steps); each move is printed."""
  from glow_ood import checkpointing  # pylint: disable=g-import-not-at-top
  for _, name, _ in model_workdirs(config, models):
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      note = checkpointing.set_aside_damaged_steps(path)
      if note:
        print(f'{name}: {note}', flush=True)
