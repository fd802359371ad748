"""Which data sets an experiment evaluates, on what subsets, and where the files are.

Roles: 'train' and 'test' are the in-distribution splits, every other label is an
OOD set (its eval tag, normally the data set name). Final evaluations write
eval/{tag}_{split}_step{S}.npz; the checkpoint curves (Figure 5) use tags
prefixed with 'curve_' so their smaller subsets never overwrite the final ones.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from glow_ood import config_validation
from glow_ood import data
from glow_ood import evaluate

CURVE_PREFIX = 'curve_'
MODELS = ('glow', 'cv_glow')
MODEL_TITLES = {'glow': 'Glow', 'cv_glow': 'CV-Glow'}


@dataclasses.dataclass(frozen=True)
class EvalSet:
  label: str                      # 'train', 'test' or the OOD tag
  entry: config_validation.EvalDataset

  @property
  def is_ood(self) -> bool:
    return self.label not in ('train', 'test')

  def entry_string(self) -> str:
    return entry_string(self.entry)


def entry_string(entry: config_validation.EvalDataset) -> str:
  """Back to the 'name:split[key=value;...]' syntax of config.eval.datasets."""
  options = dict(entry.overrides)
  options.update(max_examples=entry.max_examples, batch_size=entry.batch_size,
                 dequantization=entry.dequantization, tag=entry.tag)
  return f'{entry.name}:{entry.split}[' + ';'.join(f'{k}={v}' for k, v in options.items()) + ']'


def csv(value) -> list[str]:
  return [v.strip() for v in str(value).split(',') if v.strip()]


def models_of(config: ml_collections.ConfigDict) -> list[str]:
  models = csv(config.experiment.models)
  unknown = sorted(set(models) - set(MODELS))
  if unknown or not models:
    raise ValueError(f'config.experiment.models={config.experiment.models!r}: choose from {MODELS}.')
  return [m for m in MODELS if m in models]


def eval_sets(config: ml_collections.ConfigDict, model: str, *, curve: bool = False) -> list[EvalSet]:
  """The in-distribution train/test subsets and the OOD sets, for one model's config."""
  model_config = config[model]
  exp = config.experiment
  name = model_config.data.name
  size = (lambda n: exp.curve_examples) if curve else (lambda n: n)
  entries = [
      ('train', f'{name}:train[max_examples={size(exp.train_examples)}]'),
      ('test', f'{name}:test[max_examples={size(exp.test_examples)}]'),
  ]
  ood = config_validation.parse_eval_datasets(model_config, exp.ood)
  for entry in ood:
    max_examples = entry.max_examples or exp.ood_examples
    entries.append((entry.tag, entry_string(dataclasses.replace(
        entry, max_examples=size(max_examples)))))
  parsed = config_validation.parse_eval_datasets(model_config, [e for _, e in entries])
  result = []
  for (label, _), entry in zip(entries, parsed):
    if curve:
      entry = dataclasses.replace(entry, tag=CURVE_PREFIX + entry.tag)
    result.append(EvalSet(label, entry))
  labels = [s.label for s in result]
  if len(set(labels)) != len(labels):
    raise ValueError(f'Two evaluation sets share a label in {labels}; give OOD entries [tag=...].')
  return result


def npz_path(model_workdir: str, eval_set: EvalSet, step: int) -> str:
  return evaluate.eval_path(model_workdir, eval_set.entry.tag, eval_set.entry.split, step)


def load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def data_spec(model_config: ml_collections.ConfigDict, eval_set: EvalSet) -> data.DataSpec:
  return data.DataSpec(**config_validation.data_fields_for(model_config, eval_set.entry))


def load_images(model_config: ml_collections.ConfigDict, eval_set: EvalSet,
                max_examples: int | None = None) -> np.ndarray:
  """The same images the evaluation of eval_set scores (first max_examples of them)."""
  limit = eval_set.entry.max_examples or None
  if max_examples:
    limit = min(limit, max_examples) if limit else max_examples
  return data.load_array(data_spec(model_config, eval_set), eval_set.entry.split,
                         max_examples=limit)


def display_name(eval_set: EvalSet, in_name: str) -> str:
  if eval_set.is_ood:
    return f'{eval_set.entry.name} {eval_set.entry.split} (OOD)'
  return f'{in_name} {eval_set.label}'


def model_workdir(workdir: str, model: str) -> str:
  return os.path.join(workdir, model)
