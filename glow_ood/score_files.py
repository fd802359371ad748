"""Every OOD score for the sets `--mode=evaluate` writes (the config.scores block).

Fitted scores (typicality, DoSE) are fitted on the model's own training images
(config.scores.fit_examples of config.data's train split) and nothing else;
each evaluated set is compared with the in-distribution test split
(config.scores.reference_examples). config.scores.background_workdir (a model
of the same architecture trained on mutated images) adds the likelihood ratio;
config.scores.ensemble_workdirs (the same model with other seeds) adds WAIC.
Beside each evaluation file, eval/{tag}_{split}_step{S}_scores.npz holds one
array per score (npz keys: the score names with non-alphanumerics as '_').
"""

from __future__ import annotations


from absl import logging
import ml_collections
import numpy as np

from glow_ood import data
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import model_kinds
from glow_ood import parallel
from glow_ood import scores as scores_lib
from glow_ood import train_state as train_state_lib
from glow_ood.analysis import complexity
from glow_ood.flows.glow import latent_shapes
from glow_ood.scores import suite

FIT = 'fit (train)'
REFERENCE = 'reference (test)'


def scores_path(eval_file: str) -> str:
  return eval_file[:-len('.npz')] + '_scores.npz'


def file_key(score_name: str) -> str:
  """'input complexity (PNG)' -> 'input_complexity_PNG': a valid npz key."""
  key = ''.join(c if c.isalnum() else '_' for c in score_name).strip('_')
  while '__' in key:
    key = key.replace('__', '_')
  return key


def model_scores(config: ml_collections.ConfigDict, compressors) -> list[scores_lib.Score]:
  """Every score for the model of `config` (the per-level ones only for a multi-scale flow)."""
  shape = train_state_lib.image_shape(config)
  kind = model_kinds.kind_of(config.model)
  dims = []
  if kind.decomposes:
    dims = [int(np.prod(s)) for s in latent_shapes(shape, config.model.num_levels)]
  return scores_lib.default_scores(dims, int(np.prod(shape)), compressors, kind.dose_terms)


def _csv(value) -> list[str]:
  return [v.strip() for v in str(value or '').split(',') if v.strip()]


def _own_split(config, split: str, max_examples: int) -> np.ndarray:
  spec = data.DataSpec(**dict(config.data, augment='none'))
  return data.load_array(spec, split, max_examples=max_examples or None,
                         subset_seed=config.eval.subset_seed)


def evaluate_and_score(config: ml_collections.ConfigDict, workdir: str, eval_sets,
                       step: int | None = None) -> dict[str, str]:
  """evaluate.evaluate_checkpoint, then (config.scores.enabled) every OOD score per image
  of each set, as --mode=evaluate does; returns {set key: evaluation npz path}."""
  done = evaluate.evaluate_checkpoint_sets(config, workdir, eval_sets, step,
                                           keep_images=config.scores.enabled)
  if config.scores.enabled:
    score_evaluated_sets(done.evaluator, workdir, done.variables, done.step, done.kept)
  return done.paths


def score_evaluated_sets(evaluator: evaluate.Evaluator, workdir: str, params, step: int,
                         evaluated: dict[str, tuple]) -> dict[str, str]:
  """Scores every evaluated set; evaluated = {key: (eval npz path, images, results)}.

  Returns {key: scores npz path}; prints each set's AUROC per score against the
  in-distribution test split.
  """
  config, mesh = evaluator.config, evaluator.mesh
  cfg = config.scores
  key = train_state_lib.run_keys(config.seed)['eval']
  images = {FIT: _own_split(config, 'train', cfg.fit_examples),
            REFERENCE: _own_split(config, 'test', cfg.reference_examples)}
  images.update({k: v[1] for k, v in evaluated.items()})

  def evaluate_all(model_params, known=None):
    out = dict(known or {})
    for label, x in images.items():
      if label not in out:
        out[label] = evaluator(model_params, x, key=key)
    return out

  own = evaluate_all(params, {k: v[2] for k, v in evaluated.items()})
  background = None
  if cfg.background_workdir:
    background = evaluate_all(evaluate.load_state_for_eval(config, cfg.background_workdir,
                                                           mesh, -1)[0])
  ensemble = [evaluate_all(evaluate.load_state_for_eval(config, w, mesh, -1)[0])
              for w in _csv(cfg.ensemble_workdirs)]
  compressors = [c for c in _csv(cfg.compressors) if c in complexity.available_compressors()]
  missing = sorted(set(_csv(cfg.compressors)) - set(compressors))
  if missing:
    logging.warning('Compressors %s are not available here; their input-complexity scores '
                    'are skipped (available: %s).', missing, complexity.available_compressors())
  stats = {label: suite.set_statistics(
      own[label], background=background[label] if background else None,
      ensemble=[m[label] for m in ensemble],
      code_bits={c: complexity.code_length_bits(images[label], c) for c in compressors})
           for label in images}
  values, _ = suite.score_sets(model_scores(config, compressors), stats, fit_label=FIT)
  metrics = suite.ood_metrics(values, REFERENCE, list(evaluated))

  paths = {}
  for k, (eval_file, _, _) in evaluated.items():
    paths[k] = scores_path(eval_file)
    if parallel.is_main_process():
      eval_files.write_npz_atomic(paths[k], dict(
          {file_key(name): v for name, v in values[k].items()}, step=np.int64(step)))
  if parallel.is_main_process():
    print(f'OOD scores (higher = more OOD), fitted on {len(images[FIT])} {config.data.name} '
          f'train images; AUROC of each set against {len(images[REFERENCE])} '
          f'{config.data.name} test images:')
    print(metrics_table(metrics), flush=True)
  return paths


def metrics_table(metrics: dict[str, dict]) -> str:
  names = list(next(iter(metrics.values())))
  width = max([len(k) for k in metrics] + [8])
  lines = [f'{"set":<{width}}' + ''.join(f'  {n:>{max(len(n), 6)}}' for n in names)]
  for label, entry in metrics.items():
    lines.append(f'{label:<{width}}' + ''.join(
        f'  {entry[n]["auroc"]:>{max(len(n), 6)}.3f}' for n in names))
  return '\n'.join(lines)


