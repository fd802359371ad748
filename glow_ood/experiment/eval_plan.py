"""Which data sets an experiment evaluates, on what subsets, and where the files are.

Roles: 'train' and 'test' are the in-distribution splits, every other label is an
OOD set (its block's key in config.experiment.ood). Final evaluations write
eval/<key>_step<S>.npz (key <name>_<split>, or <label>_<split>); the checkpoint curves (Figure 5) use keys
prefixed with 'curve_' so their smaller subsets never overwrite the final ones.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from glow_ood import data
from glow_ood import eval_sets as eval_sets_lib
from glow_ood import eval_files
from glow_ood.configs.pairs import pair_base
from glow_ood.eval_sets import EvalDataset, eval_block

CURVE_PREFIX = 'curve_'
MODELS = pair_base.MODELS
# How the report names each pair model, from its kind (glow_ood.model_kinds).
MODEL_TITLES = {model: pair_base.names(model)[0] for model in MODELS}
MODEL_DESCRIPTIONS = {model: pair_base.names(model)[1] for model in MODELS}


@dataclasses.dataclass(frozen=True)
class ExperimentSet:
  """An evaluation set (glow_ood.eval_sets.EvalDataset) in its role in the experiment."""
  label: str                      # 'train', 'test' or the OOD set's label
  entry: EvalDataset

  @property
  def is_ood(self) -> bool:
    return self.label not in ('train', 'test')


def csv(value) -> list[str]:
  return [v.strip() for v in str(value).split(',') if v.strip()]


def models_of(config: ml_collections.ConfigDict) -> list[str]:
  models = csv(config.experiment.models)
  unknown = sorted(set(models) - set(MODELS))
  if unknown or not models:
    raise ValueError(f'config.experiment.models={config.experiment.models!r}: choose from {MODELS}.')
  return [m for m in MODELS if m in models]


def ood_labels(config: ml_collections.ConfigDict) -> list[str]:
  """The OOD sets' labels, the headline set first."""
  exp = config.experiment
  labels = sorted(exp.ood.keys())
  if exp.headline_ood not in labels:
    raise ValueError(f'config.experiment.headline_ood={exp.headline_ood!r} is not one of '
                     f'config.experiment.ood: {labels}.')
  return [exp.headline_ood] + [l for l in labels if l != exp.headline_ood]


def eval_sets(config: ml_collections.ConfigDict, model: str, *, curve: bool = False) -> list[ExperimentSet]:
  """The in-distribution train/test subsets and the OOD sets, for one model's config.

  Values are not checked here: pipeline.check_pair_config checks every block once.
  """
  model_config = config[model]
  exp = config.experiment
  name = model_config.data.name
  blocks = [('train', f'{name}_train', eval_block(name, 'train', max_examples=exp.train_examples)),
            ('test', f'{name}_test', eval_block(name, 'test', max_examples=exp.test_examples))]
  for label in ood_labels(config):
    block = exp.ood[label].copy_and_resolve_references()
    if block.max_examples is None:
      block.max_examples = exp.ood_examples
    blocks.append((label, f'{label}_{block.split}', block))
  result = []
  for label, key, block in blocks:
    if curve:
      key, block.max_examples = CURVE_PREFIX + key, exp.curve_examples
    result.append(ExperimentSet(label, eval_sets_lib.resolve_block(model_config, key, block)))
  labels = [s.label for s in result]
  if len(set(labels)) != len(labels):
    raise ValueError(f'An OOD set is labelled like an in-distribution split in {labels}; '
                     'rename its block in config.experiment.ood.')
  return result


def npz_path(model_workdir: str, eval_set: ExperimentSet, step: int) -> str:
  return eval_files.eval_path(model_workdir, eval_set.entry.key, step)


def load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def load_images(eval_set: ExperimentSet, max_examples: int | None = None) -> np.ndarray:
  """The same images the evaluation of eval_set scores, in its order (first max_examples).

  Its order is a seeded shuffle of the whole split, so any first k rows are a random
  subset too (graying, attacks, statistics and the stress suite take such prefixes).
  """
  limit = eval_set.entry.max_examples or None
  if max_examples:
    limit = min(limit, max_examples) if limit else max_examples
  return data.load_array(eval_set.entry.data, eval_set.entry.split, max_examples=limit,
                         subset_seed=eval_set.entry.subset_seed)


def display_name(eval_set: ExperimentSet, in_name: str) -> str:
  if eval_set.is_ood:
    return f'{eval_set.entry.name} {eval_set.entry.split} (OOD)'
  return f'{in_name} {eval_set.label}'


def model_workdir(workdir: str, model: str) -> str:
  return os.path.join(workdir, model)
