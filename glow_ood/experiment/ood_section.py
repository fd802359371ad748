"""The OOD-detection half of a pair report: stress sets, every score, their metrics.

For each model: every evaluated set (train, test, OOD sets, stress sets) gets
its statistics (the model's evaluation, its background model's and ensemble
members' log p(x), the images' code lengths), the scores are fitted on the
train subset alone and computed for every set, written per image to
workdir/scores/<model>/<label>.npz, and summarised against the test subset.
"""

from __future__ import annotations

import hashlib
import os

import jax.numpy as jnp
import numpy as np

from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import score_files
from glow_ood.analysis import complexity
from glow_ood.analysis import corruptions
from glow_ood.analysis import stress
from glow_ood.experiment import attack_section
from glow_ood.experiment import eval_plan
from glow_ood.experiment import figures
from glow_ood.experiment import model_runs
from glow_ood.scores import suite

SCORES_DIR = 'scores'
CODE_BITS_FILE = 'code_bits.npz'
STRESS_SEED = 0


def stress_sets(config, test_images: np.ndarray) -> dict[str, np.ndarray]:
  """{'stress_<name>': uint8 images} from the in-distribution test subset."""
  names = eval_plan.csv(config.experiment.stress)
  if not names:
    return {}
  limit = config.experiment.stress_examples or None
  images = test_images[:limit]
  sets = stress.stress_suite(images, STRESS_SEED, names=names)
  return {f'stress_{name}': sets[name] for name in names}


def stress_name(label: str) -> str:
  return label[len('stress_'):]


CORRUPTION_PREFIX = 'corruption_'
# Stress sets a detector must catch (noise at every sigma, constant images, brightening and
# contrast changes, inversion): far from the data, not near it. Darkening is reported beside
# them as hard; flips, rotations and shifts are near-OOD.
FAR_OOD_STRESS = ('noise4', 'noise16', 'noise64', 'uniform_noise', 'constant', 'contrast0.5',
                  'contrast2', 'brightness+64', 'invert')


def corruption_sets(config, test_images: np.ndarray) -> dict[str, np.ndarray]:
  """{'corruption_<name>_s<severity>': uint8 images}: the MNIST-C corruptions of the test
  subset's first experiment.corruption_examples images, at each listed severity."""
  exp = config.experiment
  names = eval_plan.csv(exp.corruptions)
  if not names:
    return {}
  images = test_images[:exp.corruption_examples or None]
  sets = corruptions.corruption_suite(images, names, tuple(exp.corruption_severities),
                                      seed=STRESS_SEED)
  return {CORRUPTION_PREFIX + label: x for label, x in sets.items()}


def corruption_of(label: str) -> tuple[str, int] | None:
  """(corruption, severity) of a corruption set's label; None for any other label."""
  if not label.startswith(CORRUPTION_PREFIX):
    return None
  return corruptions.parse_label(label[len(CORRUPTION_PREFIX):])


def code_lengths(workdir: str, images: dict[str, np.ndarray],
                 compressors: list[str]) -> dict[str, dict[str, np.ndarray]]:
  """{label: {compressor: bits [N]}}, cached in workdir/scores/code_bits.npz."""
  path = os.path.join(workdir, SCORES_DIR, CODE_BITS_FILE)
  cached = {}
  if os.path.exists(path):
    with np.load(path) as f:
      cached = {k: f[k] for k in f.files}
  usable = [c for c in compressors if c in complexity.available_compressors()]
  out, changed = {}, False
  for label, x in images.items():
    out[label] = {}
    # Lengths are reused only for the very same images (a changed subset recomputes).
    digest = np.str_(hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
    same_images = str(cached.get(f'{label}__sha1', '')) == digest
    cached[f'{label}__sha1'] = digest
    for compressor in usable:
      key = f'{label}__{compressor}'
      if key not in cached or not same_images:
        cached[key] = complexity.code_length_bits(x, compressor)
        changed = True
      out[label][compressor] = cached[key]
  if changed:
    eval_files.write_npz_atomic(path, cached)
  return out


def score_model(config, model: str, final: dict[str, dict], members: dict[str, dict],
                code_bits: dict[str, dict], workdir: str) -> dict[str, dict[str, np.ndarray]]:
  """{label: {score: [N]}} for one model; writes workdir/scores/<model>/<label>.npz.

  final: {label: evaluation arrays} of the model; members: {member name: {label:
  evaluation arrays}} of its background model and ensemble members.
  """
  model_config = config[model]
  background = members.get(f'{model}_background')
  ensemble = [members[name] for name in sorted(members) if name.startswith(f'{model}_seed')]
  stats = {label: suite.set_statistics(
      arrays, background=background[label] if background else None,
      ensemble=[m[label] for m in ensemble], code_bits=code_bits.get(label))
           for label, arrays in final.items()}
  every = score_files.model_scores(model_config, eval_plan.csv(config.experiment.compressors))
  values, fitted = suite.score_sets(every, stats, fit_label='train')
  for label, per_score in values.items():
    eval_files.write_npz_atomic(
        os.path.join(workdir, SCORES_DIR, model, f'{label}.npz'),
        {score_files.file_key(name): v for name, v in per_score.items()})
  chosen = [sc for sc in every if sc.name in fitted]
  return values, fitted, chosen


def attack_inputs(config, model: str, own_state, fitted: dict, chosen: list, members: dict,
                  mesh, evaluator: evaluate.Evaluator | None = None):
  """What the attack section needs to evade each score: {name: score_fn(stats)}, the

  other models' terms (a background model's log p(x), ensemble members' log p(x)) as a
  differentiable function of the image, and the code lengths as fixed per-image terms.
  config.experiment.attacks.scores names the scores attacked ('' = all that apply).
  Every model's terms come from its own Evaluator's terms (the function its evaluation
  runs): a member's from members[name]['evaluator'] (model_runs.run_member's), the
  model's own from `evaluator` (one is built when not given).
  """
  model_config = config[model]
  wanted = eval_plan.csv(config.experiment.attacks.scores) or [sc.name for sc in chosen]
  score_fns = {sc.name: (lambda stats, sc=sc, f=fitted[sc.name]: sc.fn(stats, f))
               for sc in chosen if sc.name in wanted}
  member_models = {}  # name -> (its Evaluator, its variables)
  for name, member in members.items():
    member_evaluator = member.get('evaluator') or evaluate.Evaluator(
        model_runs.member_configs(config, model)[name], mesh)
    variables, _ = evaluate.load_state_for_eval(member_evaluator.config, member['workdir'],
                                                mesh, member['step'])
    member_models[name] = (member_evaluator, variables)
  ensemble = sorted(n for n in member_models if n.startswith(f'{model}_seed'))
  own_evaluator = evaluator or evaluate.Evaluator(model_config, mesh)

  def log_px(name, x, key):
    member_evaluator, variables = member_models[name]
    return member_evaluator.terms(variables, x, key)['log_px']

  def extra_stats_fn(x, key):
    extra = {}
    if f'{model}_background' in member_models:
      extra['background_log_px'] = log_px(f'{model}_background', x, key)
    if ensemble:
      own = own_evaluator.terms(own_state, x, key)['log_px']
      extra['ensemble_log_px'] = jnp.stack([own] + [log_px(n, x, key) for n in ensemble],
                                           axis=-1)
    return extra

  compressors = [c for c in eval_plan.csv(config.experiment.compressors)
                 if c in complexity.available_compressors()]

  def fixed_stats_fn(images):
    return {f'code_bits_{c}': complexity.code_length_bits(np.asarray(images), c)
            for c in compressors}

  return score_fns, extra_stats_fn, fixed_stats_fn


def score_descriptions(config, model: str) -> dict[str, dict[str, str]]:
  described = {s.name: {'description': s.description, 'reference': s.reference,
                        'needs': s.needs, 'file_key': score_files.file_key(s.name)}
               for s in score_files.model_scores(config[model],
                                             eval_plan.csv(config.experiment.compressors))}
  described[suite.REVERSED_LOG_P] = {'description': suite.REVERSED_DESCRIPTION,
                                     'reference': 'baseline', 'needs': 'nothing',
                                     'file_key': ''}
  return described


def analyse(config, model: str, final: dict[str, dict], values: dict[str, dict],
            ood_labels: list[str], stress_labels: list[str], fig_dir: str,
            names: dict[str, str]) -> dict:
  """Metrics of every score on every OOD, stress and corruption set; the figure.

  stress_labels: the stress sets' and corruption sets' labels. The headline is the
  detector declared in config.experiment.detector (fixed before any OOD set is seen);
  'best_on_test_set' is the score with the highest AUROC on each OOD set itself, a
  selection on test data that the report labels as such.
  """
  exp = config.experiment
  train_bpd = final['train']['bits_per_dim']
  metrics = suite.ood_metrics(values, 'test', ood_labels + stress_labels,
                              train_bits_per_dim=train_bpd,
                              typicality_batch_sizes=exp.typicality_batch_sizes,
                              num_resamples=exp.bootstrap_resamples)
  detector = exp.detector

  def summary(label):
    finite = suite.finite_images(final[label])
    return {'bits_per_dim': float(final[label]['bits_per_dim'][finite].mean()),
            'n': int(finite.size), 'n_overflowed': int((~finite).sum()),
            'metrics': metrics[label]}

  corrupted = {l: corruption_of(l) for l in stress_labels if corruption_of(l)}
  result = {'detector': detector,
            'ood_metrics': {l: metrics[l] for l in ood_labels},
            'stress': {l: summary(l) for l in stress_labels if l not in corrupted},
            'corruptions': {l: dict(summary(l), corruption=c, severity=s)
                            for l, (c, s) in corrupted.items()},
            'scores_dir': os.path.join(SCORES_DIR, model),
            'score_descriptions': score_descriptions(config, model), 'figures': {}}
  result['best_on_test_set'] = {l: suite.best_on_test_set(metrics[l]) for l in ood_labels}
  if ood_labels:
    shown = [name for name in ('log p(x)', detector) if name in values['test']]
    result['figures']['scores'] = figures.score_histograms(
        os.path.join(fig_dir, f'{model}_scores_hist.png'),
        {name: {names[l]: values[l][name] for l in ['test'] + ood_labels if name in values[l]}
         for name in shown},
        f'{eval_plan.MODEL_TITLES[model]}: OOD scores, higher = more OOD',
        exp.histogram_bins)
  return result
