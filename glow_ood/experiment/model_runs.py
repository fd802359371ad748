"""One model of a pair: train (or resume, or skip when finished), then evaluate.

Everything is resumable: training resumes from the newest checkpoint, and an
evaluation file already written for a (set, checkpoint) is reused when
config.experiment.reuse_evaluations is set and the file was written under exactly
the settings asked for now (eval_files.eval_settings: weights, noise, subset, model);
otherwise it is recomputed and the earlier file kept aside under its settings' hash.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import ml_collections
import numpy as np

from glow_ood import atomic_files
from glow_ood import checkpointing
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import sample
from glow_ood import train
from glow_ood import train_state as train_state_lib
from glow_ood.experiment import eval_plan

ARRAY_SET_SPLIT = 'generated'  # the split name of sets made in memory (stress suite)
TIMINGS_FILE = 'experiment_timings.json'


def _record_time(model_workdir: str, what: str, seconds: float) -> None:
  """Accumulates wall-clock seconds per phase (a resumed run adds to the earlier ones)."""
  path = os.path.join(model_workdir, TIMINGS_FILE)
  timings = {}
  if os.path.exists(path):
    with open(path) as f:
      timings = json.load(f)
  timings[what] = timings.get(what, 0.0) + seconds
  with atomic_files.atomic_write(path, 'w') as f:   # never half a file, even if killed
    json.dump(timings, f, indent=1)


def read_timings(model_workdir: str) -> dict[str, float]:
  path = os.path.join(model_workdir, TIMINGS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def train_model(model_config: ml_collections.ConfigDict, model_workdir: str,
                evaluator: evaluate.Evaluator | None = None) -> int:
  """Trains to model_config.train.num_steps unless a checkpoint there already exists; returns its step.

  evaluator: the model's, for the train loop's periodic evaluation (so the caller's later
  evaluation reuses its compiled forward pass).
  """
  steps = checkpointing.available_steps(model_workdir)
  target = model_config.train.num_steps
  if steps and steps[-1] >= target:
    logging.info('%s: finished (checkpoint step %d), not training.', model_workdir, steps[-1])
    return steps[-1]
  start = time.time()
  print(f'Training {model_workdir} to step {target}'
        + (f' (resuming from step {steps[-1]})' if steps else ''), flush=True)
  train.train_and_evaluate(model_config, model_workdir, check_config=False, evaluator=evaluator)
  _record_time(model_workdir, 'train_s', time.time() - start)
  return checkpointing.available_steps(model_workdir)[-1]


def evaluate_sets(evaluator: evaluate.Evaluator, model_workdir: str,
                  sets: list[eval_plan.ExperimentSet], step: int, reuse: bool) -> dict[str, str]:
  """{label: npz path} of every set at checkpoint `step`, evaluating only what is missing."""
  paths = {s.label: eval_plan.npz_path(model_workdir, s, step) for s in sets}
  config = evaluator.config
  settings = {s.label: eval_files.eval_settings(config, step, dequantization=s.entry.dequantization,
                                              batch_size=s.entry.batch_size, eval_set=s.entry)
              for s in sets}
  missing = [s for s in sets
             if not (reuse and eval_files.reusable(paths[s.label], settings[s.label]))]
  if missing:
    start = time.time()
    written = evaluate.evaluate_checkpoint(
        evaluator.config, model_workdir, [s.entry for s in missing], step=step,
        evaluator=evaluator)
    _record_time(model_workdir, 'evaluate_s', time.time() - start)
    for s in missing:
      assert written[s.entry.key] == paths[s.label], (written, paths)
  return paths


def write_samples(model_config: ml_collections.ConfigDict, model_workdir: str,
                  step: int) -> list[str]:
  """Sample grids (PNG) of checkpoint `step` at the config's temperatures; reused if present."""
  paths = [sample.sample_path(model_workdir, step, t) for t in sample.temperatures(model_config)]
  if not all(os.path.exists(p) for p in paths):
    paths = sample.write_samples(model_config, model_workdir, step=step)
  return paths


def run_model(config: ml_collections.ConfigDict, model: str, workdir: str,
              draw_samples: bool = True) -> dict:
  """Trains and evaluates one model; returns its step, final and per-checkpoint npz paths.

  draw_samples=False: the sample grids are left to the caller (their paths are returned)."""
  model_config = config[model]
  model_workdir = eval_plan.model_workdir(workdir, model)
  evaluator = evaluate.Evaluator(model_config)  # one per model: training's and evaluation's
  step = train_model(model_config, model_workdir, evaluator)
  samples = (write_samples(model_config, model_workdir, step) if draw_samples else
             [sample.sample_path(model_workdir, step, t)
              for t in sample.temperatures(model_config)])
  reuse = config.experiment.reuse_evaluations
  final = evaluate_sets(evaluator, model_workdir, eval_plan.eval_sets(config, model), step, reuse)
  curves = {}
  if model in eval_plan.csv(config.experiment.curve_models):
    curve_sets = eval_plan.eval_sets(config, model, curve=True)
    for ckpt_step in checkpointing.available_steps(model_workdir):
      curves[ckpt_step] = evaluate_sets(evaluator, model_workdir, curve_sets, ckpt_step, reuse)
  return {'workdir': model_workdir, 'step': step, 'final': final, 'curves': curves,
          'samples': samples, 'evaluator': evaluator}


def evaluate_arrays(evaluator: evaluate.Evaluator, model_workdir: str,
                    arrays: dict[str, np.ndarray], step: int, reuse: bool) -> dict[str, str]:
  """{label: npz path} for image sets made in memory (eval/{label}_generated_step{S}.npz)."""
  model_config = evaluator.config
  paths = {label: eval_files.eval_path(model_workdir, f'{label}_{ARRAY_SET_SPLIT}', step)
           for label in arrays}
  batch_size = model_config.eval.batch_size
  dequantization = model_config.eval.dequantization
  settings = {l: eval_files.eval_settings(model_config, step, dequantization=dequantization,
                                        batch_size=batch_size, images=arrays[l])
              for l in arrays}
  missing = [l for l in arrays if not (reuse and eval_files.reusable(paths[l], settings[l]))]
  if missing:
    start = time.time()
    params, _ = evaluate.load_state_for_eval(model_config, model_workdir, evaluator.mesh, step)
    key = train_state_lib.run_keys(model_config.seed)['eval']
    for label in missing:
      results = evaluator(params, arrays[label], key=key)
      evaluator.write(paths[label], results, step, dataset=label, split=ARRAY_SET_SPLIT,
                      dequantization=dequantization, settings=settings[label])
    _record_time(model_workdir, 'evaluate_s', time.time() - start)
  return paths


def background_config(config: ml_collections.ConfigDict, model: str,
                      mutation_rate: float) -> ml_collections.ConfigDict:
  """The training config of a model's likelihood-ratio background model at one mutation rate."""
  background = config[model].copy_and_resolve_references()
  background.train.mutation_rate = float(mutation_rate)
  background.train.weight_decay = config.background.weight_decay
  background.train.num_steps = config.background.num_steps or config[model].train.num_steps
  background.train.eval_every = 0
  background.train.keep_checkpoints = 2
  return background


def member_configs(config: ml_collections.ConfigDict, model: str,
                   background_rate: float | None = None) -> dict[str, ml_collections.ConfigDict]:
  """The extra models a model's scores need: {name: training config}, each trained in workdir/name.

  '<model>_background' (likelihood ratio) when the model is in config.background.models,
  with that block's L2 and mutation rate `background_rate` (the one tuned by
  glow_ood.experiment.background_tuning; None = the first of background.mutation_rates);
  '<model>_seed<k>' for k = 1 .. ensemble_size-1 (WAIC) when the model is in
  config.experiment.ensemble_models.
  """
  exp = config.experiment
  members = {}
  if model in eval_plan.csv(config.background.models):
    rate = config.background.mutation_rates[0] if background_rate is None else background_rate
    members[f'{model}_background'] = background_config(config, model, rate)
  seeds = exp.ensemble_size if model in eval_plan.csv(exp.ensemble_models) else 0
  for k in range(1, seeds):
    member = config[model].copy_and_resolve_references()
    member.seed = config[model].seed + k
    members[f'{model}_seed{k}'] = member
  return members


def run_member(member_config: ml_collections.ConfigDict, member_workdir: str,
               sets: list[eval_plan.ExperimentSet], arrays: dict[str, np.ndarray],
               reuse: bool) -> dict:
  """Trains (or resumes) a background or ensemble model; evaluates it on every set.

  Returns its workdir, step, evaluation paths and its Evaluator (built once, for its
  training, its evaluation and the attacks that read its terms).
  """
  evaluator = evaluate.Evaluator(member_config)
  step = train_model(member_config, member_workdir, evaluator)
  final = evaluate_sets(evaluator, member_workdir, sets, step, reuse)
  final.update(evaluate_arrays(evaluator, member_workdir, arrays, step, reuse))
  return {'workdir': member_workdir, 'step': step, 'final': final, 'evaluator': evaluator}
