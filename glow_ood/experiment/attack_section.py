"""Attacks on the likelihood of one trained model: numbers, figure and report markdown.

    attacks = attack_section.run(model_config, model_state, mesh, images, ood_labels=['mnist'],
                                 attack_config=default_attack_config('quick'),
                                 score_fns={'log p(x)': lambda s: s['bits_per_dim']},
                                 key=key, fig_dir=fig_dir, model_name='glow', title='Glow')
    lines = attack_section.render(attacks, workdir, names={'test': ..., 'mnist': ...})

Every number is that of a real 8-bit image: attacked images are re-evaluated with
glow_ood.evaluate.evaluate_images, and so are the originals, with the same noise key
and batch layout, so before and after see the same dequantization noise. The best
iterate of each attack is judged by exactly that evaluation (see _attack_rows), so no
image is reported worse on its objective than it started.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from glow_ood import analysis
from glow_ood import evaluate
from glow_ood import train_state as train_state_lib
from glow_ood.analysis import attacks
from glow_ood.experiment import attack_figures

HEADING = '## Attacks on the likelihood'
OBJECTIVES = {
    'raise': 'raise log p(x)',
    'lower': 'lower log p(x)',
    'target': "bits/dim toward the other set's mean",
}


def default_attack_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """The attack block of a pair config (config.experiment.attacks); sizes are images per set."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.examples = 48                  # in-distribution test images, and per OOD set
  cfg.epsilons = (1, 2, 4, 8)        # 8-bit levels (2 = 2/255) for raising and lowering
  cfg.headline_epsilon = 2           # levels for the target and evasion attacks, and the figure
  cfg.num_steps = 12                 # signed-gradient steps per attack
  cfg.noise_draws = 1                # dequantization draws averaged per gradient step
  cfg.batch_size = 64                # images attacked (and re-evaluated) together
  cfg.figure_examples = 3            # images per set shown in the figure
  if variant == 'tiny':
    cfg.examples = 6
    cfg.epsilons = (2, 8)
    cfg.num_steps = 4
    cfg.batch_size = 8
    cfg.figure_examples = 2
  elif variant == 'paper':
    cfg.examples = 500
    cfg.num_steps = 100
    cfg.noise_draws = 4
    cfg.batch_size = 128
    cfg.figure_examples = 4
  elif variant != 'quick':
    raise ValueError(f'Unknown variant {variant!r}; choose tiny, quick or paper.')
  return cfg


def as_variables(model_state) -> dict:
  """What evaluate.load_state_for_eval returns (params today, a variables dict later) as
  the variables of model.apply, without touching either."""
  if isinstance(model_state, dict) and 'params' in model_state:
    return model_state
  return {'params': model_state}


class _Attacker:
  """One model's statistics, objectives and evaluation, each compiled once."""

  def __init__(self, model_config, model_state, mesh, attack_config, key,
               score_fns: dict[str, Callable], extra_stats_fn: Callable | None):
    self.config = model_config
    self.state = model_state
    self.mesh = mesh
    self.cfg = attack_config
    self.key = key
    self.dequantization = model_config.eval.dequantization
    model = train_state_lib.model_from_config(model_config)
    base = attacks.statistics_fn(model, as_variables(model_state), model_config.n_bits,
                                 self.dequantization)
    self.extra_stats_fn = extra_stats_fn
    if extra_stats_fn is None:
      stats_fn = base
    else:
      def stats_fn(x, k):
        return {**base(x, k), **extra_stats_fn(x, k)}
    self.objectives = {
        'signed': attacks.signed_log_density_objective(stats_fn),
        'target': attacks.bits_per_dim_target_objective(stats_fn),
    }
    self.objectives.update({f'evade:{name}': attacks.evasion_objective(stats_fn, fn)
                            for name, fn in score_fns.items()})
    self.seconds = {}  # objective -> wall-clock seconds (compilation included)
    self.image_steps = 0  # images x gradient steps, padding included

  def evaluate(self, images: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """The ordinary evaluation of one attack chunk (noise key fold_in(key, chunk))."""
    stats = evaluate.evaluate_images(
        self.config, self.mesh, self.state, images, batch_size=self.cfg.batch_size,
        dequantization=self.dequantization, key=jax.random.fold_in(self.key, chunk))
    if self.extra_stats_fn is not None:
      extra = self.extra_stats_fn(jnp.asarray(images, jnp.float32),
                                  jax.random.fold_in(jax.random.fold_in(self.key, chunk), 0))
      stats.update({k: np.asarray(v) for k, v in extra.items()})
    return stats

  def attack(self, objective: str, images: np.ndarray, epsilon: np.ndarray,
             args: tuple) -> dict:
    """Attacks rows of images (each with its epsilon and objective args), batch by batch.

    Rows are padded to whole batches of cfg.batch_size, as evaluate_images pads, and
    batch c is judged with the key evaluate_images gives its batch 0 when called with
    fold_in(key, c): under uniform noise the best iterate is picked by the very noise
    the reported evaluation uses.
    """
    start = time.time()
    bs = self.cfg.batch_size
    num = len(images)
    padded = -(-num // bs) * bs

    def pad(a):
      a = np.asarray(a)
      out = np.zeros((padded,) + a.shape[1:], a.dtype)
      out[:num] = a
      return out
    images_p, eps_p = pad(images), pad(epsilon)
    args_p = [pad(a) for a in args]
    out = {'images': [], 'trace': [], 'before': [], 'after': [], 'before_stats': [],
           'after_stats': []}
    self.image_steps += padded * self.cfg.num_steps
    for chunk in range(padded // bs):
      rows = slice(chunk * bs, (chunk + 1) * bs)
      chunk_key = jax.random.fold_in(self.key, chunk)
      result = attacks.pgd_attack(
          self.objectives[objective], images_p[rows], epsilon=eps_p[rows],
          num_steps=self.cfg.num_steps, key=jax.random.fold_in(chunk_key, 1_000_003),
          noise_draws=self.cfg.noise_draws, select_key=jax.random.fold_in(chunk_key, 0),
          objective_args=tuple(jnp.asarray(a[rows]) for a in args_p))
      out['images'].append(result.images)
      out['trace'].append(result.trace)
      out['before'].append(result.objective_before)
      out['after'].append(result.objective_after)
      out['before_stats'].append(self.evaluate(images_p[rows], chunk))
      out['after_stats'].append(self.evaluate(result.images, chunk))
    merged = {
        'images': np.concatenate(out['images'])[:num],
        'trace': np.concatenate(out['trace'], axis=1)[:, :num],
        'objective_before': np.concatenate(out['before'])[:num],
        'objective_after': np.concatenate(out['after'])[:num],
    }
    for name in ('before_stats', 'after_stats'):
      merged[name] = {k: np.concatenate([s[k] for s in out[name]])[:num]
                      for k in out[name][0]}
    self.seconds[objective] = self.seconds.get(objective, 0.0) + time.time() - start
    return merged


def _flip_fraction(log_p: np.ndarray, reference_median: float, is_ood: bool) -> float:
  """In-distribution images less likely than the other set's median image, or OOD images
  more likely than the in-distribution median."""
  return float(np.mean(log_p > reference_median) if is_ood else np.mean(log_p < reference_median))


def run(model_config: ml_collections.ConfigDict, model_state, mesh,
        images: dict[str, np.ndarray], *, ood_labels: list[str],
        attack_config: ml_collections.ConfigDict, key: jax.Array, fig_dir: str,
        model_name: str, title: str, in_label: str = 'test',
        score_fns: dict[str, Callable] | None = None,
        extra_stats_fn: Callable | None = None) -> dict:
  """Attacks one model; returns the JSON-able entry for results['models'][model]['attacks'].

  images: label -> uint8 [N, H, W, C] (the first attack_config.examples of each are used).
  model_state: what evaluate.load_state_for_eval returns, passed through unchanged.
  score_fns: name -> score_fn(stats) -> [B], higher = more OOD, differentiable in jax;
    default: bits/dim alone ('log p(x)').
  extra_stats_fn: optional (x float pixels, key) -> dict of further per-image terms
    (e.g. another model's log_px) that score functions read; merged into the stats.
  """
  start = time.time()
  cfg = attack_config
  if score_fns is None:
    score_fns = {'log p(x)': lambda stats: stats['bits_per_dim']}
  attacker = _Attacker(model_config, model_state, mesh, cfg, key, score_fns, extra_stats_fn)
  labels = [in_label] + list(ood_labels)
  sets = {l: np.asarray(images[l][:cfg.examples]) for l in labels}
  headline = float(cfg.headline_epsilon)
  epsilons = [float(e) for e in cfg.epsilons]
  if headline not in epsilons:
    epsilons.append(headline)

  # Raise and lower log p(x) at every epsilon: one batch of rows per set.
  rows_meta, rows_images, rows_eps, rows_sign = [], [], [], []
  offset = 0
  for label in labels:
    for objective, sign in (('raise', 1.0), ('lower', -1.0)):
      for eps in epsilons:
        n = len(sets[label])
        rows_meta.append((label, objective, eps, offset, n))
        offset += n
        rows_images.append(sets[label])
        rows_eps.append(np.full(n, eps, np.float32))
        rows_sign.append(np.full(n, sign, np.float32))
  signed = attacker.attack('signed', np.concatenate(rows_images), np.concatenate(rows_eps),
                           (np.concatenate(rows_sign),))
  clean = {}
  for label, objective, eps, offset, n in rows_meta:
    if label not in clean:
      clean[label] = {k: v[offset:offset + n] for k, v in signed['before_stats'].items()}

  medians = {l: float(np.median(clean[l]['log_p_discrete'])) for l in labels}
  mean_bpd = {l: float(clean[l]['bits_per_dim'].mean()) for l in labels}
  ood_median = float(np.median(np.concatenate([clean[l]['log_p_discrete'] for l in ood_labels])))
  ood_mean_bpd = float(np.mean(np.concatenate([clean[l]['bits_per_dim'] for l in ood_labels])))

  def reference(label):
    """(median log p, mean bits/dim) of the set an image of `label` is compared with."""
    return (ood_median, ood_mean_bpd) if label == in_label else (medians[in_label],
                                                                 mean_bpd[in_label])

  table = []
  figure_rows = {}
  for label, objective, eps, offset, n in rows_meta:
    part = slice(offset, offset + n)
    before = signed['before_stats']['bits_per_dim'][part]
    after = signed['after_stats']['bits_per_dim'][part]
    median, _ = reference(label)
    is_ood = label != in_label
    table.append({
        'set': label, 'objective': objective, 'epsilon': eps, 'n': n,
        'bits_per_dim_before': float(before.mean()), 'bits_per_dim_after': float(after.mean()),
        'shift_mean': float((after - before).mean()),
        'shift_max': float(np.max(np.abs(after - before))),
        'flip_before': _flip_fraction(signed['before_stats']['log_p_discrete'][part], median,
                                      is_ood),
        'flip_after': _flip_fraction(signed['after_stats']['log_p_discrete'][part], median,
                                     is_ood),
        'objective_never_worse': bool(np.all(
            signed['objective_after'][part] >= signed['objective_before'][part])),
    })
    if eps == headline and ((label == in_label and objective == 'raise')
                            or (is_ood and objective == 'lower')):
      k = min(cfg.figure_examples, n)
      figure_rows[f'{label}_{objective}'] = {
          'original': sets[label][:k], 'attacked': signed['images'][part][:k],
          'bits_per_dim_trace': _trace_to_bits_per_dim(
              signed['trace'][:, part][:, :k], 1.0 if objective == 'raise' else -1.0,
              model_config),
          'label': label, 'objective': objective}

  # Pull each set's bits/dim onto the other set's mean, at the headline epsilon.
  target_images = np.concatenate([sets[l] for l in labels])
  targets = np.concatenate([np.full(len(sets[l]), reference(l)[1], np.float32)
                            for l in labels])
  target = attacker.attack('target', target_images,
                           np.full(len(target_images), headline, np.float32), (targets,))
  offset = 0
  for label in labels:
    n = len(sets[label])
    part = slice(offset, offset + n)
    offset += n
    before = target['before_stats']['bits_per_dim'][part]
    after = target['after_stats']['bits_per_dim'][part]
    median, goal = reference(label)
    table.append({
        'set': label, 'objective': 'target', 'epsilon': headline, 'n': n, 'target': goal,
        'bits_per_dim_before': float(before.mean()), 'bits_per_dim_after': float(after.mean()),
        'shift_mean': float((after - before).mean()),
        'shift_max': float(np.max(np.abs(after - before))),
        'distance_before': float(np.abs(before - goal).mean()),
        'distance_after': float(np.abs(after - goal).mean()),
        'flip_before': _flip_fraction(target['before_stats']['log_p_discrete'][part], median,
                                      label != in_label),
        'flip_after': _flip_fraction(target['after_stats']['log_p_discrete'][part], median,
                                     label != in_label),
        'objective_never_worse': bool(np.all(
            target['objective_after'][part] >= target['objective_before'][part])),
    })

  # Evasion: OOD images pushed to score as in-distribution (sign -1), in-distribution
  # images pushed to score as OOD (sign +1); AUROC against the clean other side.
  evasion = {}
  ood_all = np.concatenate([sets[l] for l in ood_labels])
  n_in = len(sets[in_label])
  evade_images = np.concatenate([sets[in_label], ood_all])
  signs = np.r_[np.ones(n_in, np.float32), -np.ones(len(ood_all), np.float32)]
  for name, score_fn in score_fns.items():
    result = attacker.attack(f'evade:{name}', evade_images,
                             np.full(len(evade_images), headline, np.float32), (signs,))
    score_before = np.asarray(score_fn(result['before_stats']), np.float64)
    score_after = np.asarray(score_fn(result['after_stats']), np.float64)
    in_before, in_after = score_before[:n_in], score_after[:n_in]
    per_set = {}
    offset = n_in
    for label in ood_labels:
      n = len(sets[label])
      out_before, out_after = score_before[offset:offset + n], score_after[offset:offset + n]
      offset += n
      per_set[label] = {
          'auroc_clean': analysis.auroc(in_before, out_before),
          'auroc_ood_attacked': analysis.auroc(in_before, out_after),
          'auroc_in_attacked': analysis.auroc(in_after, out_before),
          'auroc_both_attacked': analysis.auroc(in_after, out_after),
      }
    evasion[name] = {
        'epsilon': headline, 'sets': per_set,
        'in_score_before': float(in_before.mean()), 'in_score_after': float(in_after.mean()),
        'ood_score_before': float(score_before[n_in:].mean()),
        'ood_score_after': float(score_after[n_in:].mean()),
        'objective_never_worse': bool(np.all(result['objective_after']
                                             >= result['objective_before'])),
    }

  figure = attack_figures.attack_panels(
      os.path.join(fig_dir, f'{model_name}_attacks.png'), figure_rows, headline,
      f'{title}: attacks at epsilon = {headline:g}/255')
  return {
      'settings': {**cfg.to_dict(), 'epsilons': epsilons,
                   'dequantization': attacker.dequantization,
                   'step_rule': 'signed gradient, linearly decaying step from 4*eps/T, '
                                'projected on the L-inf ball and [0, 255] every step'},
      'in_label': in_label, 'ood_labels': list(ood_labels),
      'reference': {'ood_median_log_p': ood_median, 'in_median_log_p': medians[in_label],
                    'ood_mean_bits_per_dim': ood_mean_bpd,
                    'in_mean_bits_per_dim': mean_bpd[in_label]},
      'table': table, 'evasion': evasion, 'figure': figure,
      'seconds': time.time() - start, 'seconds_per_objective': attacker.seconds,
      'image_steps': attacker.image_steps,
  }


def _trace_to_bits_per_dim(trace: np.ndarray, sign: float, model_config) -> np.ndarray:
  """Signed log p(x) (nats) per step -> bits/dim per step."""
  num_dims = train_state_lib.num_dims(model_config)
  return -(sign * trace) / (num_dims * np.log(2.0))


def _f(value, digits=3) -> str:
  return f'{value:.{digits}f}'


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def describe(settings: dict) -> str:
  """How the attacks ran, in words, for the report."""
  noise = ('the midpoint (u = 1/2)' if settings['dequantization'] == 'midpoint' else
           f'uniform noise, the gradient averaged over {settings["noise_draws"]} draw(s) a step')
  return (
      f'Projected gradient attacks (L-inf PGD, Madry et al. 2018) on the input pixels: '
      f'{settings["num_steps"]} signed-gradient steps, the step decaying linearly from '
      f'4·eps/{settings["num_steps"]}, each projected onto the eps-ball in 8-bit levels and onto '
      f'[0, 255]. Dequantization: {noise}. Every iterate is rounded to integers and judged by '
      'the ordinary evaluation (same noise as the reported numbers); the best one is kept, so '
      'no image ends worse on its objective than it began. Numbers are evaluations of the '
      'returned 8-bit images, the originals evaluated with the same noise. '
      f'{settings["examples"]} images per set.')


def render(attacks_result: dict, workdir: str, names: dict[str, str], title: str) -> list[str]:
  """Markdown lines for one model: the epsilon x objective table, evasion AUROCs, the figure."""
  out = [f'### {title}', '', describe(attacks_result['settings']), '']
  rows = []
  for row in attacks_result['table']:
    is_in = row['set'] == attacks_result['in_label']
    objective = OBJECTIVES[row['objective']]
    if row['objective'] == 'target':
      objective += (f' ({_f(row["target"])}; mean distance {_f(row["distance_before"])} → '
                    f'{_f(row["distance_after"])})')
    flip = ('less likely than the OOD median' if is_in
            else 'more likely than the in-distribution median')
    rows.append([names.get(row['set'], row['set']), objective, f'{row["epsilon"]:g}',
                 _f(row['bits_per_dim_before']), _f(row['bits_per_dim_after']),
                 f'{row["shift_mean"]:+.3f}', _f(row['shift_max']),
                 f'{_f(row["flip_before"], 2)} → {_f(row["flip_after"], 2)} ({flip})'])
  out += _table(['set', 'objective', 'eps (levels)', 'bits/dim before', 'after', 'mean shift',
                 'max |shift|', 'fraction ranked past the other set'], rows)
  out += ['']
  rows = []
  for name, entry in attacks_result['evasion'].items():
    for label, m in entry['sets'].items():
      rows.append([name, names.get(label, label), f'{entry["epsilon"]:g}', _f(m['auroc_clean']),
                   _f(m['auroc_ood_attacked']), _f(m['auroc_in_attacked']),
                   _f(m['auroc_both_attacked'])])
  if rows:
    out += ['Each OOD score under its own evading attack (AUROC, OOD positive; OOD images '
            'pushed to score as in-distribution, in-distribution images pushed to score as OOD; '
            'each side compared with the other side clean):', '']
    out += _table(['score', 'OOD set', 'eps (levels)', 'AUROC clean', 'OOD attacked',
                   'in-dist. attacked', 'both attacked'], rows)
    out += ['']
  if attacks_result.get('figure'):
    out += [f'![{title} attacks]({os.path.relpath(attacks_result["figure"], workdir)})', '',
            'Each row: the original, the perturbation (attacked − original, in levels, colour '
            'scale ±eps), the attacked image, and bits/dim of the rounded iterate over the '
            'steps.', '']
  out += [f'Attack time: {_f(attacks_result["seconds"], 0)} s.', '']
  return out
