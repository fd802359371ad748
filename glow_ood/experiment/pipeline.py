"""The whole experiment for one pair: train, evaluate, analyse, write the report.

    results = run_pair(config, workdir)   # config from glow_ood/configs/pairs/<pair>.py

Files under workdir: glow/ and cv_glow/ (each a training workdir with
checkpoints and eval/*.npz), figures/*.png, results.json and report.md.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from glow_ood import analysis
from glow_ood import atomic_files
from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood.analysis import corruptions
from glow_ood.analysis import stress as stress_lib
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import model_kinds
from glow_ood import parallel
from glow_ood import score_files
from glow_ood import workdir_config
from glow_ood.flows.glow import LOGDET_KINDS, total_logdet
from glow_ood.experiment import attack_section
from glow_ood.experiment import background_tuning
from glow_ood.experiment import eval_plan
from glow_ood.experiment import figures
from glow_ood.experiment import model_analysis
from glow_ood.experiment import model_runs
from glow_ood.experiment import preflight
from glow_ood.experiment import ood_section
from glow_ood.experiment import report
from glow_ood.experiment import workers
from glow_ood.scores import suite

FIGURES_DIR = 'figures'
RESULTS_FILE = 'results.json'
REPORT_FILE = 'report.md'


def set_summary(arrays: dict[str, np.ndarray], path: str) -> dict:
  """Means (and spreads) of one evaluation file, log terms in nats per image.

  'n' images; the means are over those whose statistics are finite, and 'n_overflowed'
  counts the others (log p(x) overflowed float32 to -inf), left out of every mean.

  log_px is the discrete log-likelihood (bound); every other per-image term the model
  kind reports (a flow's log_pz and log-dets, a VAE's elbo, kl...) is averaged too.
  """
  finite = suite.finite_images(arrays)
  settings = arrays.get('settings')
  arrays = {k: (v[finite] if np.ndim(v) >= 1 and len(v) == len(finite) else v)
            for k, v in arrays.items() if k != 'settings'}
  n = int(finite.sum())
  summary = {
      'npz': path, 'n': int(finite.size), 'n_overflowed': int((~finite).sum()),
      'bits_per_dim': float(arrays['bits_per_dim'].mean()),
      'bits_per_dim_std': float(arrays['bits_per_dim'].std()),
      'log_px': float(arrays['log_p_discrete'].mean()),
      'log_px_var': float(arrays['log_p_discrete'].var(ddof=1)) if n > 1 else 0.0,
  }
  if settings is not None:  # what produced the file: step, weights, noise, subset, model
    summary['settings'] = json.loads(str(settings))
  if 'log_pz' in arrays:
    summary['log_pz'] = float(arrays['log_pz'].sum(-1).mean())
    summary['logdet'] = float(total_logdet(arrays).mean())
    summary.update({f'logdet_{k}': float(arrays[f'logdet_{k}'].sum(-1).mean())
                    for k in LOGDET_KINDS})
  for key, value in arrays.items():
    if key not in summary and key not in SUMMARY_SKIPPED and np.ndim(value) >= 1:
      summary[key] = float(np.asarray(value).reshape(n, -1).sum(-1).mean())
  return summary


# Evaluation-file arrays the summary does not average (metadata, or averaged above).
SUMMARY_SKIPPED = ('log_px', 'log_p_discrete', 'bits_per_dim', 'log_pz') + tuple(
    f'logdet_{k}' for k in LOGDET_KINDS) + eval_files.METADATA_KEYS


def _model_figures(model: str, title: str, kind: model_kinds.ModelKind, sets, final, curves,
                   fig_dir, bins, in_name):
  names = {s.label: eval_plan.display_name(s, in_name) for s in sets}
  out = {}
  out['log_px'] = figures.log_px_histogram(
      os.path.join(fig_dir, f'{model}_log_px_hist.png'),
      {names[l]: a['log_p_discrete'] for l, a in final.items()},
      f'{title}: log p(x)', bins)
  if kind.decomposes:
    out['decomposition'] = figures.decomposition_histograms(
        os.path.join(fig_dir, f'{model}_decomposition_hist.png'),
        {names[l]: a['log_pz'].sum(-1) for l, a in final.items()},
        {names[l]: total_logdet(a) for l, a in final.items()},
        title, bins)
  if curves['steps']:
    out['curves'] = figures.training_curves(
        os.path.join(fig_dir, f'{model}_training_curves.png'), curves['steps'],
        {names[l]: v for l, v in curves['bits_per_dim'].items()},
        f'{title}: bits/dim over training')
  return out


def analyse_model(config, model: str, run: dict, images: dict[str, np.ndarray], mesh,
                  fig_dir: str, in_name: str, workdir: str, code_bits: dict) -> dict:
  """Numbers and figures of one trained model."""
  exp = config.experiment
  model_config = config[model]
  title = eval_plan.MODEL_TITLES[model]
  sets = eval_plan.eval_sets(config, model)
  ood_labels = [s.label for s in sets if s.is_ood]
  stress_labels = sorted(run['stress'])
  final = {l: eval_plan.load_npz(p) for l, p in run['final'].items()}
  stressed = {l: eval_plan.load_npz(p) for l, p in run['stress'].items()}
  result = {'step': run['step'], 'workdir': run['workdir'], 'kind': model_config.model.kind,
            'sets': {l: set_summary(final[l], run['final'][l]) for l in final}}

  members = {name: {l: eval_plan.load_npz(p) for l, p in member['final'].items()}
             for name, member in run['members'].items()}
  every_set = {**final, **stressed}
  scores_start = time.time()
  values, fitted, chosen = ood_section.score_model(config, model, every_set, members, code_bits,
                                                   workdir)
  names = {s.label: eval_plan.display_name(s, in_name) for s in sets}
  names.update({l: f'{ood_section.stress_name(l)} (stress)' for l in stress_labels})
  names.update({l: f'{c} severity {s} (corruption)' for l in stress_labels
                for c, s in [ood_section.corruption_of(l) or (None, None)] if c})
  result.update(ood_section.analyse(config, model, every_set, values, ood_labels, stress_labels,
                                    fig_dir, names))
  result['scores_s'] = time.time() - scores_start
  result['members'] = {name: {'workdir': m['workdir'], 'step': m['step'],
                              'timings': model_runs.read_timings(m['workdir'])}
                       for name, m in run['members'].items()}

  curves = {'steps': sorted(run['curves']), 'bits_per_dim': {s.label: [] for s in sets},
            'n': {}}
  for step in curves['steps']:
    for label, path in run['curves'][step].items():
      arrays = eval_plan.load_npz(path)
      curves['bits_per_dim'][label].append(float(arrays['bits_per_dim'].mean()))
      curves['n'][label] = int(arrays['bits_per_dim'].shape[0])
  result['curves'] = curves

  start = time.time()
  parts = {}  # wall-clock seconds of each part of the analysis

  def part(name, since):
    now = time.time()
    parts[name] = now - since
    return now

  kind = model_kinds.kind_of(model_config.model)
  variables, _ = evaluate.load_state_for_eval(model_config, run['workdir'], mesh, run['step'])
  key = jax.random.PRNGKey(model_config.seed)
  second_order = {}
  # A discrete likelihood is piecewise constant in the pixels: no Hessian, no gradient.
  for index, label in enumerate(ood_labels if kind.smooth_in_pixels else []):
    q, p = final[label]['log_p_discrete'], final['test']['log_p_discrete']
    entry = {
        'measured': float(q.mean() - p.mean()),
        'measured_stderr': float(np.sqrt(q.var(ddof=1) / q.size + p.var(ddof=1) / p.size)),
        'variance_sum_diff': analysis.channel_variance_sum_difference(
            analysis.dataset_pixel_stats(images[label], model_config.n_bits)[1],
            analysis.dataset_pixel_stats(images['test'], model_config.n_bits)[1]).tolist(),
    }
    entry.update(model_analysis.trace_predictions(
        model_config, variables, images['test'], images[label],
        num_probes=exp.hutchinson_probes, sample_examples=exp.sample_trace_examples,
        chunk=exp.hvp_chunk, key=jax.random.fold_in(key, index)))
    if model_config.model.coupling == 'additive':
      _, var_p = model_analysis.model_scale_stats(images['test'], model_config.n_bits)
      _, var_q = model_analysis.model_scale_stats(images[label], model_config.n_bits)
      entry['closed_form'] = model_analysis.cv_glow_closed_form_prediction(
          model_config, variables, var_p, var_q)
    second_order[label] = entry
  result['second_order'] = second_order
  clock = part('load and Section 5', start)

  if exp.attacks.enabled and kind.smooth_in_pixels:
    score_fns, extra_stats_fn, fixed_stats_fn = ood_section.attack_inputs(
        config, model, variables, fitted, chosen, run['members'], mesh, run['evaluator'])
    result['attacks'] = attack_section.run(
        run['evaluator'], variables, images, ood_labels=ood_labels, attack_config=exp.attacks,
        key=jax.random.fold_in(key, 7919), fig_dir=fig_dir, model_name=model, title=title,
        score_fns=score_fns, extra_stats_fn=extra_stats_fn, fixed_stats_fn=fixed_stats_fn)
    clock = part('attacks', clock)

  gray_sets = ['test'] + ood_labels
  result['graying'] = {
      target: {label: dict(model_analysis.graying(run['evaluator'], variables,
                                                  images[label][:exp.graying_examples],
                                                  exp.graying_alphas, key, target),
                           n=int(len(images[label][:exp.graying_examples])))
               for label in gray_sets}
      for target in model_analysis.GRAYING_TARGETS}
  part('graying', clock)
  result['analysis_s'] = time.time() - start
  result['analysis_parts_s'] = parts

  result['figures'].update(_model_figures(model, title, kind, sets, final, curves, fig_dir,
                                          exp.histogram_bins, in_name))
  names = {s.label: eval_plan.display_name(s, in_name) for s in sets}
  result['figures']['graying'] = figures.graying_curves(
      os.path.join(fig_dir, f'{model}_graying.png'),
      {model_analysis.GRAYING_TARGETS[t]: {names[l]: c for l, c in curves.items()}
       for t, curves in result['graying'].items()},
      f'{title}: graying')
  for label, entry in second_order.items():
    rows = {'measured': (entry['measured'], entry['measured_stderr'])}
    if 'closed_form' in entry:
      rows['closed form, exact-for-linear'] = (entry['closed_form']['exact_for_linear'], 0.0)
      rows['closed form, paper alpha'] = (entry['closed_form']['paper_alpha'], 0.0)
    rows['trace, Hutchinson (diagonal)'] = (entry['hutchinson'], entry['hutchinson_stderr'])
    if 'sample_form' in entry:
      rows['trace, samples (full cov.)'] = (entry['sample_form'], entry['sample_form_stderr'])
    result['figures'][f'second_order_{label}'] = figures.second_order_bars(
        os.path.join(fig_dir, f'{model}_second_order_{label}.png'), rows,
        f'{title}: {names[label]} minus {names["test"]}')
  result['timings'] = model_runs.read_timings(run['workdir'])
  return result


def data_statistics(config, sets, images, fig_dir, in_name) -> dict:
  """Figure 6 and the per-channel sums of Section 5, from the evaluated subsets."""
  model_config = config[eval_plan.models_of(config)[0]]
  limit = config.experiment.stats_examples or None
  means, variances, table = {}, {}, {}
  for s in sets:
    name = eval_plan.display_name(s, in_name)
    x = images[s.label][:limit]
    m, v = analysis.per_image_channel_stats(x, model_config.n_bits)
    means[name], variances[name] = m, v
    _, var_hwc, count = analysis.dataset_pixel_stats(x, model_config.n_bits)
    table[s.label] = {'name': name, 'n': int(count),
                      'mean_of_means': m.mean(0).tolist(), 'mean_of_variances': v.mean(0).tolist(),
                      'variance_sum': analysis.channel_sums(var_hwc).tolist()}
  path = figures.channel_stat_histograms(os.path.join(fig_dir, 'data_channel_stats.png'),
                                         means, variances, config.experiment.histogram_bins)
  return {'sets': table, 'figure': path}


def check_pair_config(config: ml_collections.ConfigDict) -> list[str]:
  """Checks every model's config and the OOD blocks once, before any compute; returns the models."""
  models = eval_plan.models_of(config)
  background_tuning.check_config(config)
  for key in ('experiment.curve_models', 'experiment.ensemble_models', 'background.models'):
    block, field = key.split('.')
    unknown = sorted(set(eval_plan.csv(config[block][field])) - set(eval_plan.MODELS))
    if unknown:
      raise config_validation.ConfigError(
          f'config.{key}={config[block][field]!r} names {unknown}: list models among '
          f'{eval_plan.MODELS}, comma-separated.')
  for model in models:
    # The model and the extra models trained beside it (background, ensemble seeds).
    for name, model_config in {model: config[model],
                               **model_runs.member_configs(config, model)}.items():
      try:
        config_validation.validate_config(model_config, device_count=jax.device_count())
      except config_validation.ConfigError as error:
        raise config_validation.ConfigError(
            f'{error} (in the config of {name}, from config.{model} and config.background)'
            if name != model else str(error).replace('config.', f'config.{model}.', 1)
        ) from None
    config_validation.resolve_eval_sets(config[model], config.experiment.ood,
                                        device_count=jax.device_count(), where='experiment.ood')
    known = [s.name for s in score_files.model_scores(
        config[model], eval_plan.csv(config.experiment.compressors))]
    if config.experiment.detector not in known:
      raise config_validation.ConfigError(
          f'config.experiment.detector={config.experiment.detector!r} is not a score of '
          f'{model}: choose one of {known} (it must apply to every model of the pair).')
  exp = config.experiment
  unknown = sorted(set(eval_plan.csv(exp.corruptions)) - set(corruptions.CORRUPTIONS))
  if unknown:
    raise config_validation.ConfigError(
        f'config.experiment.corruptions={exp.corruptions!r} names {unknown}: list '
        f'corruptions among {sorted(corruptions.CORRUPTIONS)}, comma-separated.')
  bad = [s for s in exp.corruption_severities if s not in corruptions.SEVERITIES]
  if bad:
    raise config_validation.ConfigError(
        f'config.experiment.corruption_severities={tuple(exp.corruption_severities)!r}: '
        f'each must be one of {corruptions.SEVERITIES}.')
  if exp.bootstrap_resamples < 0:
    raise config_validation.ConfigError(
        f'config.experiment.bootstrap_resamples={exp.bootstrap_resamples!r}: must be >= 0 '
        '(0 = no intervals).')
  eval_plan.ood_labels(config)
  return models


class CompileClock:
  """Seconds XLA spent compiling programs while active (jax.monitoring's backend compile
  events; a program found in the persistent compilation cache costs none), so that the
  phase table can say how much of each phase was compilation rather than compute."""

  EVENT = '/jax/core/compile/backend_compile_duration'

  def __init__(self):
    self.total = 0.0

  def __call__(self, event: str, duration: float, **_) -> None:
    if event == self.EVENT:
      self.total += duration

  def __enter__(self) -> 'CompileClock':
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self)


def run_pair(config: ml_collections.ConfigDict, workdir: str, *,
             workers_plan: workers.Plan | None = None, worker_model: str | None = None,
             worker_task: str = 'chain', worker_output: str | None = None) -> dict:
  """Trains (or resumes) every model, evaluates, analyses; writes report.md. Returns the results.

  workers_plan: run the models' chains in worker processes (glow_ood.experiment.workers);
  None runs them in turn here. worker_model: this process is a worker: run that model's
  task alone ('chain': everything of the model but its sample grids; 'samples': the grids of
  its finished training) and write its output to worker_output (no report); returns it."""
  start = time.time()
  models = check_pair_config(config)
  if worker_model is None:
    preflight.check(config, workdir, models, process_count=jax.process_count())
  elif worker_model not in models:
    raise config_validation.ConfigError(
        f'--worker_model={worker_model!r} is not a model of this pair ({", ".join(models)}).')
  workdir_config.prepare(workdir)
  with CompileClock() as compiling:
    if worker_model is not None and worker_task == 'samples':
      return _sample_task(config, worker_model, workdir, compiling, worker_output)
    return _run_pair(config, workdir, models, start, compiling, workers_plan, worker_model,
                     worker_output)


class _PhaseClock:
  """Wall-clock seconds of each phase of this process, in order, and XLA's compile seconds
  within each."""

  def __init__(self, compiling: CompileClock):
    self.compiling = compiling
    self.phases, self.compile_s = {}, {}
    self._since = (time.time(), compiling.total)

  def lap(self, name: str) -> None:
    now, compiled = time.time(), self.compiling.total
    self.phases[name] = self.phases.get(name, 0.0) + now - self._since[0]
    self.compile_s[name] = self.compile_s.get(name, 0.0) + compiled - self._since[1]
    self._since = (now, compiled)


def _model_chain(config, model: str, workdir: str, images: dict, stress: dict, in_name: str,
                 clock: _PhaseClock, code_bits: dict | None = None,
                 draw_samples: bool = True) -> dict:
  """Everything of one model, which no other model's chain reads: train and evaluate, the
  stress and corruption sets, the background and ensemble members, then the analysis.
  code_bits: the compressors' code lengths (None: read from, or written to, their cache);
  draw_samples=False: leave the sample grids to a task of their own (their paths are set)."""
  reuse = config.experiment.reuse_evaluations
  run = model_runs.run_model(config, model, workdir, draw_samples=draw_samples)
  clock.lap(f'{model}: train and evaluate')
  run['stress'] = model_runs.evaluate_arrays(run['evaluator'], run['workdir'], stress,
                                             run['step'], reuse)
  clock.lap(f'{model}: stress and corruption sets')
  run['background_tuning'] = background_tuning.tune(config, model, workdir, run, images)
  run['members'] = {
      name: model_runs.run_member(member_config, os.path.join(workdir, name),
                                  eval_plan.eval_sets(config, model), stress, reuse)
      for name, member_config in model_runs.member_configs(
          config, model, background_tuning.chosen_rate(run['background_tuning'])).items()}
  clock.lap(f'{model}: background and ensemble members')
  if code_bits is None:
    code_bits = _code_lengths(config, workdir, images, stress)
  print(f'Analysing {model} ...', flush=True)
  result = analyse_model(config, model, run, images, parallel.make_mesh(),
                         os.path.join(workdir, FIGURES_DIR), in_name, workdir, code_bits)
  result['samples'] = run['samples']
  result['background_tuning'] = run['background_tuning']
  result['devices'] = _devices()
  clock.lap(f'{model}: scores, Section 5, attacks, graying')
  return result


def _trained(config, workdir: str, model: str) -> bool:
  """Whether the model's training has reached its step count (its samples can be drawn)."""
  steps = checkpointing.available_steps(eval_plan.model_workdir(workdir, model))
  return bool(steps) and steps[-1] >= config[model].train.num_steps


def _sample_task(config, model: str, workdir: str, compiling: CompileClock,
                 output: str) -> dict:
  """A worker's sample task: the grids of the model's finished training."""
  clock = _PhaseClock(compiling)
  model_workdir = eval_plan.model_workdir(workdir, model)
  step = checkpointing.available_steps(model_workdir)[-1]
  paths = model_runs.write_samples(config[model], model_workdir, step)
  clock.lap(f'{model}: sample grids')
  task = {'samples': paths, 'phases_s': clock.phases, 'compile_s': clock.compile_s}
  workers.write_output(output, task)
  return task


def _code_lengths(config, workdir: str, images: dict, stress: dict) -> dict:
  return ood_section.code_lengths(workdir, {**images, **stress},
                                  eval_plan.csv(config.experiment.compressors))


def _devices() -> dict:
  return {'count': jax.device_count(), 'platform': jax.default_backend(),
          'cores': parallel.usable_cores()}


def _run_pair(config, workdir: str, models: list[str], start: float, compiling: CompileClock,
              workers_plan: workers.Plan | None, worker_model: str | None,
              worker_output: str | None) -> dict:
  clock = _PhaseClock(compiling)
  first = models[0]
  in_name = config[first].data.name
  sets = eval_plan.eval_sets(config, first)
  images = {s.label: eval_plan.load_images(s) for s in sets}
  stress = ood_section.stress_sets(config, images['test'])
  stress.update(ood_section.corruption_sets(config, images['test']))
  clock.lap('images: evaluation, stress and corruption sets')

  if worker_model is not None:
    result = _model_chain(config, worker_model, workdir, images, stress, in_name, clock,
                          draw_samples=False)
    chain = {'result': result, 'phases_s': clock.phases, 'compile_s': clock.compile_s}
    workers.write_output(worker_output, chain)
    return chain

  fig_dir = os.path.join(workdir, FIGURES_DIR)
  shared = {}

  def parent_share():   # the parent's part, beside the workers or before the chains
    shared['code_bits'] = _code_lengths(config, workdir, images, stress)
    clock.lap('code lengths')
    shared['data_stats'] = data_statistics(config, sets, images, fig_dir, in_name)

  if workers_plan is None:
    parent_share()
    model_results = {m: _model_chain(config, m, workdir, images, stress, in_name, clock,
                                     shared['code_bits']) for m in models}
    phases, compile_s, worker_record = clock.phases, clock.compile_s, None
  else:
    chains = workers.run(workers_plan, workdir, parent_share,
                         samples_ready=lambda m: _trained(config, workdir, m))
    clock.lap('the models, in the workers')
    model_results = {m: dict(chain['result'], samples=chain['samples']['samples'])
                     for m, chain in chains.items()}
    phases, compile_s = dict(clock.phases), dict(clock.compile_s)
    for model, chain in chains.items():   # each worker's own phases (they overlap in time)
      for output in (chain, chain['samples']):
        for name, seconds in output['phases_s'].items():
          key = name if name.startswith(f'{model}: ') else f'{name} ({model} worker)'
          phases[key] = phases.get(key, 0.0) + seconds
          compile_s[key] = compile_s.get(key, 0.0) + output['compile_s'][name]
    worker_record = {'count': len(workers_plan.core_groups),
                     'core_groups': [list(g) for g in workers_plan.core_groups],
                     'models': {m: chain['worker'] for m, chain in chains.items()},
                     'samples': {m: chain['samples']['worker'] for m, chain in chains.items()}}

  results = {'pair': config.pair, 'variant': config.variant, 'in_name': in_name,
             'devices': _devices(),
             'workers': worker_record,
             'stress_descriptions': {l: stress_lib.DESCRIPTIONS[ood_section.stress_name(l)]
                                     for l in stress if l.startswith('stress_')},
             'corruption_descriptions': dict(corruptions.DESCRIPTIONS),
             'far_ood_stress': [f'stress_{n}' for n in ood_section.FAR_OOD_STRESS],
             'subsets': {s.label: {'subset_seed': s.entry.subset_seed,
                                   'max_examples': s.entry.max_examples,
                                   'n': int(len(images[s.label]))} for s in sets},
             'sets': [{'label': s.label, 'name': s.entry.name, 'split': s.entry.split,
                       'display': eval_plan.display_name(s, in_name), 'is_ood': s.is_ood}
                      for s in sets],
             'experiment': config.experiment.to_dict(),
             'model_configs': {m: config[m].to_dict() for m in models},
             'data_stats': shared['data_stats'],
             'models': model_results}
  results['run_wall_clock_s'] = time.time() - start
  results['phases_s'] = phases
  results['compile_s'] = compile_s
  write_outputs(results, workdir)
  return results


def write_outputs(results: dict, workdir: str) -> str:
  """results.json and report.md, each atomically (a reader, or a run killed midway, sees
  the earlier file or the whole new one); the report is rendered before either is written."""
  text = json.dumps(results, indent=1, default=_json_default)
  rendered = report.render(results, workdir)
  with atomic_files.atomic_write(os.path.join(workdir, RESULTS_FILE), 'w') as f:
    f.write(text)
  path = os.path.join(workdir, REPORT_FILE)
  with atomic_files.atomic_write(path, 'w') as f:
    f.write(rendered)
  print(f'Wrote {path}', flush=True)
  return path


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f'{type(value)} is not JSON serialisable')
