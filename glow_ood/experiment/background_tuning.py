"""The likelihood ratio's mutation rate mu, tuned on in-distribution data only.

Ren et al. (2019) choose the background model's mutation rate on in-distribution
validation data. Here, for each model listed in config.background.models:

1. Every mu in config.background.mutation_rates trains a candidate background
   model in workdir/<model>_background_mu<mu> (its name from `candidate_name`)
   for background.selection_steps steps (0: the full background step count).
2. Validation images: the first background.validation_examples images of the
   pair's in-distribution **train subset** (the 'train' evaluation set, itself a
   seeded shuffle of the training split), and copies of the same images with
   each pixel value replaced, with probability background.validation_perturbation,
   by a value drawn uniformly from 0..255 (numpy seed PERTURBATION_SEED).
3. The model and each candidate evaluate both through evaluate.Evaluator (the
   model's own evaluation key, so every candidate sees the same dequantization
   noise); a candidate's ratio is log p_background(x) - log p(x), the pipeline's
   'likelihood ratio' score, and its criterion the AUROC (with a 95% bootstrap
   interval) separating clean images (negative) from perturbed ones (positive).
4. The highest AUROC wins; ties go to the smaller mu (the record and the report say
   when a tie decided: a perturbation so strong that every candidate reaches AUROC 1
   tunes nothing, hence the small default rate). The winner is copied to
   workdir/<model>_background and trained on to the full step count from its
   newest checkpoint; the candidates stay as they were at the selection.

Used: the train subset (images the models were trained on: the pair has no
separate validation split), seeded perturbations of it, the model and the
candidates. Not used: the in-distribution test subset, any OOD set, the stress
and corruption sets, any label or any OOD metric. The L2 coefficient
(background.weight_decay) is not tuned.

The selection is recorded in workdir/<model>_background_tuning.json with the
settings it was made under (grid, steps, perturbation, images, the model's
checkpoint); a rerun under the same settings reuses it without training or
evaluating, and finished candidates are never trained again. A one-value grid is
the untuned behaviour: that mu, trained directly in workdir/<model>_background.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import shutil
import time
from collections.abc import Mapping

import ml_collections
import numpy as np

from glow_ood import atomic_files
from glow_ood import config_validation
from glow_ood import evaluate
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.analysis import ood_metrics
from glow_ood.experiment import eval_plan
from glow_ood.experiment import model_runs

PERTURBATION_SEED = 0        # numpy seed of the validation perturbation
_PERTURBATION_STREAM = 7     # keeps its random stream apart from other uses of the seed
VALIDATION_LABEL = 'train'   # the only evaluation set the selection reads
TUNING_FILE = '{model}_background_tuning.json'
FORMAT_VERSION = 1


def criterion_text(rate: float, seed: int = PERTURBATION_SEED) -> str:
  return (f'AUROC of the likelihood ratio (log p_background(x) - log p(x)) separating the '
          f'in-distribution train subset (negative) from copies of the same images with each '
          f'pixel value replaced, with probability {rate:g}, by a uniform value in 0..255 '
          f'(positive; numpy seed {seed}); the highest AUROC wins, ties go to the smaller μ. '
          'No test image, OOD set or label is read.')


UNTUNED_TEXT = 'not tuned: background.mutation_rates has one value'


def background_name(model: str) -> str:
  return f'{model}_background'


def candidate_name(model: str, rate: float) -> str:
  """The workdir name of the candidate at mutation rate `rate`, e.g. glow_background_mu0.15."""
  return f'{background_name(model)}_mu{float(rate):g}'


def tuning_path(workdir: str, model: str) -> str:
  return os.path.join(workdir, TUNING_FILE.format(model=model))


def grid(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  return tuple(float(rate) for rate in config.background.mutation_rates)


def selection_steps(config: ml_collections.ConfigDict, model: str) -> int:
  """Steps each candidate trains before the selection (at most the full step count)."""
  full = model_runs.background_config(config, model, grid(config)[0]).train.num_steps
  steps = config.background.selection_steps
  return min(steps, full) if steps else full


def check_config(config: ml_collections.ConfigDict) -> None:
  """A ConfigError naming the key for a bad grid or selection setting (before any training)."""
  background = config.background
  rates = background.mutation_rates
  where = f'config.background.mutation_rates={rates!r}'
  if not isinstance(rates, (tuple, list)) or not rates:
    raise config_validation.ConfigError(
        f'{where}: give a non-empty tuple of mutation rates, e.g. (0.05, 0.15, 0.3); one value '
        'is a fixed rate, not tuned.')
  for rate in rates:
    if (isinstance(rate, bool) or not isinstance(rate, numbers.Real)
        or not math.isfinite(rate) or not 0.0 < rate < 1.0):
      raise config_validation.ConfigError(
          f'{where}: {rate!r} is not a mutation rate; each must be a number in (0, 1), the '
          'fraction of pixel values made uniform.')
  names = [f'{float(rate):g}' for rate in rates]
  if len(set(names)) != len(names):
    raise config_validation.ConfigError(f'{where}: a rate is listed twice.')
  for key, low, high in (('selection_steps', 0, None), ('validation_examples', 0, None)):
    value = background[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
      raise config_validation.ConfigError(
          f'config.background.{key}={value!r}: must be an integer >= {low} (0 = '
          + ('every candidate to the full step count' if key == 'selection_steps'
             else 'the whole train subset') + ').')
  rate = background.validation_perturbation
  if (isinstance(rate, bool) or not isinstance(rate, numbers.Real)
      or not math.isfinite(rate) or not 0.0 < rate < 1.0):
    raise config_validation.ConfigError(
        f'config.background.validation_perturbation={rate!r}: must be a number in (0, 1), the '
        'fraction of pixel values made uniform in the selection\'s perturbed copies.')


def perturb(images: np.ndarray, rate: float, seed: int = PERTURBATION_SEED) -> np.ndarray:
  """uint8 images with each value replaced, with probability `rate`, by a uniform 0..255 one."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f'perturb expects uint8 images, got {images.dtype}.')
  rng = np.random.default_rng([seed, _PERTURBATION_STREAM])
  replace = rng.random(images.shape) < rate
  values = rng.integers(0, 256, images.shape, dtype=np.uint8)
  return np.where(replace, values, images)


def ratio_metrics(log_px_clean, log_px_perturbed, background_clean, background_perturbed, *,
                  num_resamples: int = 1000) -> dict:
  """The criterion of one candidate, from per-image log p(x) under the model and under it.

  The ratio log p_background(x) - log p(x) is the score (higher = more OOD); the
  perturbed copies are the positive class. Returns summarize_ood_metrics' dict
  (auroc, auroc_ci, n_in, n_out...) and the ratio's mean on each side.
  """
  clean = np.asarray(background_clean, np.float64) - np.asarray(log_px_clean, np.float64)
  perturbed = (np.asarray(background_perturbed, np.float64)
               - np.asarray(log_px_perturbed, np.float64))
  metrics = ood_metrics.summarize_ood_metrics(clean, perturbed, num_resamples=num_resamples)
  metrics['mean_ratio_clean'] = float(clean.mean())
  metrics['mean_ratio_perturbed'] = float(perturbed.mean())
  return metrics


def select(aurocs: Mapping[float, float]) -> float:
  """The rate with the highest AUROC; among equal AUROCs the smallest rate."""
  if not aurocs:
    raise ValueError('No candidate to select from.')
  return min(aurocs, key=lambda rate: (-round(float(aurocs[rate]), 12), float(rate)))


def _sha1(images: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()


def _log_px(evaluator: evaluate.Evaluator, model_config, model_workdir: str, step: int,
            images: np.ndarray, key) -> np.ndarray:
  variables, _ = evaluate.load_state_for_eval(model_config, model_workdir, evaluator.mesh, step)
  return np.asarray(evaluator(variables, images, key=key)['log_px'], np.float64)


def _load_record(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_record(path: str, record: dict) -> None:
  with atomic_files.atomic_write(path, 'w') as f:
    json.dump(record, f, indent=1)
    f.write('\n')


def _run_selection(config, model: str, workdir: str, main_run: dict, clean: np.ndarray,
                   perturbed: np.ndarray, settings: dict) -> dict:
  """Trains (or reuses) every candidate, evaluates the criterion, picks the rate."""
  steps = selection_steps(config, model)
  trained = {}
  for rate in grid(config):
    candidate = model_runs.background_config(config, model, rate)
    candidate.train.num_steps = steps
    name = candidate_name(model, rate)
    trained[rate] = (candidate, name, model_runs.train_model(candidate,
                                                             os.path.join(workdir, name)))
  start = time.time()
  evaluator = main_run['evaluator']   # same architecture and eval settings as every candidate
  key = train_state_lib.run_keys(config[model].seed)['eval']
  both = np.concatenate([clean, perturbed])
  own = _log_px(evaluator, config[model], main_run['workdir'], main_run['step'], both, key)
  n = len(clean)
  candidates = []
  for rate, (candidate, name, step) in trained.items():
    background = _log_px(evaluator, candidate, os.path.join(workdir, name), step, both, key)
    metrics = ratio_metrics(own[:n], own[n:], background[:n], background[n:],
                            num_resamples=config.experiment.bootstrap_resamples)
    timings = model_runs.read_timings(os.path.join(workdir, name))
    candidates.append(dict(metrics, mutation_rate=rate, workdir=name, step=int(step),
                           train_s=float(timings.get('train_s', 0.0))))
  validation_s = time.time() - start
  aurocs = {c['mutation_rate']: c['auroc'] for c in candidates}
  chosen = select(aurocs)
  best = max(aurocs.values())
  return {
      'version': FORMAT_VERSION, 'model': model, 'tuned': True, 'settings': settings,
      'grid': list(grid(config)), 'selection_steps': steps,
      'validation_perturbation': float(config.background.validation_perturbation),
      'perturbation_seed': PERTURBATION_SEED, 'validation_set': VALIDATION_LABEL,
      'n': n, 'candidates': candidates, 'chosen': chosen,
      'decided_by_tie': sum(round(a, 12) == round(best, 12) for a in aurocs.values()) > 1,
      'chosen_workdir': background_name(model), 'criterion': criterion_text(
          config.background.validation_perturbation),
      'validation_s': validation_s,
      # Training the losing candidates and the evaluations: what the tuning added.
      'extra_cost_s': validation_s + sum(c['train_s'] for c in candidates
                                         if c['mutation_rate'] != chosen),
  }


def _install(config, model: str, workdir: str, rate: float) -> None:
  """Makes workdir/<model>_background the chosen candidate (a copy), unless it is already.

  An existing workdir/<model>_background trained at another rate (an earlier run, or an
  earlier selection) is kept aside under a new name, never deleted.
  """
  dest = os.path.join(workdir, background_name(model))
  member = model_runs.background_config(config, model, rate)
  if os.path.exists(dest):
    recorded = workdir_config.load(dest) if os.path.isdir(dest) else None
    if (recorded is not None
        and math.isclose(recorded.train.mutation_rate, rate, rel_tol=1e-9)
        and math.isclose(recorded.train.weight_decay, member.train.weight_decay, rel_tol=1e-9)):
      return
    aside, k = f'{dest}_replaced', 1
    while os.path.exists(aside):
      k += 1
      aside = f'{dest}_replaced{k}'
    os.rename(dest, aside)
    print(f'{dest} was trained with another mutation rate or L2; kept aside as {aside}.',
          flush=True)
  source = os.path.join(workdir, candidate_name(model, rate))
  staging = f'{dest}.copying'
  shutil.rmtree(staging, ignore_errors=True)
  shutil.copytree(source, staging)
  # The copy goes on to the background's full step count: record the config it trains with.
  with atomic_files.atomic_write(workdir_config.config_path(staging), 'w') as f:
    f.write(workdir_config.to_json(member) + '\n')
  os.rename(staging, dest)


def tune(config: ml_collections.ConfigDict, model: str, workdir: str, main_run: dict,
         images: Mapping[str, np.ndarray]) -> dict | None:
  """Selects the model's background mutation rate; None when the model has no background.

  main_run: the model's run (model_runs.run_model: 'workdir', 'step', 'evaluator').
  images: {evaluation set label: uint8 images}; only images['train'] is read.
  Returns the record (also written to workdir/<model>_background_tuning.json when tuned);
  its 'chosen' rate is the one workdir/<model>_background trains with.
  """
  background = config.background
  if model not in eval_plan.csv(background.models):
    return None
  rates = grid(config)
  if len(rates) == 1:
    return {'version': FORMAT_VERSION, 'model': model, 'tuned': False, 'grid': list(rates),
            'chosen': rates[0], 'chosen_workdir': background_name(model),
            'criterion': UNTUNED_TEXT}
  train = np.asarray(images[VALIDATION_LABEL])
  clean = train[:background.validation_examples or None]
  perturbed = perturb(clean, background.validation_perturbation)
  settings = {
      'grid': list(rates), 'selection_steps': selection_steps(config, model),
      'validation_perturbation': float(background.validation_perturbation),
      'perturbation_seed': PERTURBATION_SEED, 'weight_decay': float(background.weight_decay),
      'n': int(len(clean)), 'images_sha1': _sha1(clean), 'model_step': int(main_run['step']),
      'bootstrap_resamples': int(config.experiment.bootstrap_resamples),
  }
  path = tuning_path(workdir, model)
  record = _load_record(path)
  if record is not None and record.get('settings') == settings:
    print(f'{model}: background mutation rate {record["chosen"]:g}, selected earlier '
          f'({os.path.basename(path)}).', flush=True)
  else:
    record = _run_selection(config, model, workdir, main_run, clean, perturbed, settings)
    _write_record(path, record)
    print(f'{model}: background mutation rate {record["chosen"]:g} selected from '
          f'{list(rates)} (' + ', '.join(f'{c["mutation_rate"]:g}: AUROC {c["auroc"]:.3f}'
                                         for c in record['candidates']) + ').', flush=True)
  _install(config, model, workdir, record['chosen'])
  return record


def chosen_rate(record: dict | None) -> float | None:
  return None if record is None else record['chosen']


def _interval(candidate: dict) -> str:
  ci = candidate.get('auroc_ci')
  return (f'{candidate["auroc"]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]' if ci
          else f'{candidate["auroc"]:.3f}')


def report_lines(results: dict) -> list[str]:
  """Markdown: how each model's background mutation rate was chosen (empty when none has one)."""
  records = {model: res['background_tuning'] for model, res in results.get('models', {}).items()
             if res.get('background_tuning')}
  if not records:
    return []
  fixed = {m: r for m, r in records.items() if not r.get('tuned')}
  tuned = {m: r for m, r in records.items() if r.get('tuned')}
  out = []
  if fixed:
    out += ['**Likelihood ratio, mutation rate.** Fixed, not tuned (a one-value '
            '`background.mutation_rates`): ' + ', '.join(
                f'{eval_plan.MODEL_TITLES.get(m, m)} μ = {r["chosen"]:g}'
                for m, r in fixed.items()) + '.', '']
  if tuned:
    first = next(iter(tuned.values()))
    out += ['**Likelihood ratio, mutation rate tuned on in-distribution data only** (Ren et al. '
            'tune it on validation data; `background.mutation_rates`). Each candidate background '
            f'model trained {first["selection_steps"]} steps; the criterion: '
            f'{first["criterion"]} The chosen one (**bold**) was then trained on to the full step '
            'count as `<model>_background`; the L2 coefficient is fixed.', '',
            '| model | μ | steps | AUROC [95% CI], clean vs perturbed train images | '
            'images clean / perturbed | mean ratio clean / perturbed |',
            '|---|---|---|---|---|---|']
    for model, record in tuned.items():
      for c in record['candidates']:
        bold = (lambda t: f'**{t}**') if c['mutation_rate'] == record['chosen'] else str
        rate = f'{c["mutation_rate"]:g}'
        out.append(f'| {eval_plan.MODEL_TITLES.get(model, model)} | {bold(rate)} '
                   f'| {c["step"]} | {bold(_interval(c))} | {c["n_in"]} / {c["n_out"]} | '
                   f'{c["mean_ratio_clean"]:.1f} / {c["mean_ratio_perturbed"]:.1f} |')
    ties = [eval_plan.MODEL_TITLES.get(m, m) for m, r in tuned.items() if r.get('decided_by_tie')]
    notes = []
    if ties:
      notes.append(f'{", ".join(ties)}: the best AUROC was shared, so the smaller μ was taken '
                   '(the criterion did not separate those candidates).')
    notes.append('Cost of the tuning (the losing candidates\' training and the selection\'s '
                 'evaluations): ' + ', '.join(f'{eval_plan.MODEL_TITLES.get(m, m)} '
                                              f'{r.get("extra_cost_s", 0.0):.0f} s'
                                              for m, r in tuned.items()) + '.')
    out += [''] + [' '.join(notes), '']
  return out
