"""Attacks on the likelihood of one trained model: numbers, figure and report markdown.

    attacks = attack_section.run(evaluator, variables, images, ood_labels=['mnist'],
                                 attack_config=config.experiment.attacks,
                                 score_fns={'log p(x)': lambda s: s['bits_per_dim']},
                                 key=key, fig_dir=fig_dir, model_name='glow', title='Glow')
    lines = attack_section.render(attacks, workdir, names={'test': ..., 'mnist': ...},
                                  title='Glow')

Every number is that of a real 8-bit image: attacked images are re-evaluated with
glow_ood.evaluate.Evaluator, and so are the originals, with the same noise key and batch
layout, so before and after see the same dequantization noise. Three keys, each a
distinct fold-in of the run key (attack_keys), recorded in the results: the gradient
steps' noise, the selection key that judges every rounded iterate (the best is kept,
see glow_ood.analysis.attacks.pgd_attack), and the reporting key of the evaluations
before and after. Selection and reporting noise are independent, so the reported effect
is not the maximum over the noisy draws the selection tried: under the reporting key an
image may end slightly worse on its objective than it began (the table records how many).
The gradients and the evaluations are the same function, Evaluator.terms.
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
from glow_ood.analysis import ood_metrics
from glow_ood.experiment import attack_figures
from glow_ood.experiment import eval_plan
from glow_ood.flows.glow import total_logdet

HEADING = '## Attacks on the likelihood'
OBJECTIVES = {
    'raise': 'raise log p(x)',
    'lower': 'lower log p(x)',
    'target': "bits/dim toward the other set's mean",
}


# Fold-ins of the run key: the gradient steps' noise, the noise that selects the best rounded
# iterate, and the noise of the reported evaluations (before and after). Distinct, so the
# selection and the report see independent dequantization noise.
GRADIENT_FOLD, SELECTION_FOLD, REPORTING_FOLD = 1, 2, 3


def attack_keys(key: jax.Array, reporting_key: jax.Array | None = None) -> dict[str, jax.Array]:
  """{'gradient', 'selection', 'reporting'}: fold_in(key, *_FOLD).

  reporting_key: use this key for the report instead (the attack command reports under the
  run's evaluation key, so that --mode=evaluate on its output reproduces its numbers);
  gradient and selection keys are still folded from `key`.
  """
  keys = {'gradient': jax.random.fold_in(key, GRADIENT_FOLD),
          'selection': jax.random.fold_in(key, SELECTION_FOLD),
          'reporting': jax.random.fold_in(key, REPORTING_FOLD)}
  if reporting_key is not None:
    keys['reporting'] = reporting_key
  return keys


def key_data(key: jax.Array) -> list[int]:
  """A PRNG key (typed or raw uint32) as plain integers, for results.json."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key).reshape(-1).tolist()


class _Attacker:
  """One model's statistics, its one combined objective and its evaluation.

  keys: attack_keys' dict. Batch c of the attack (cfg.batch_size rows; rows whose score
  reads other models' terms batched apart, after the others) steps with noise from
  fold_in(keys['gradient'], c) and is judged under fold_in(keys['selection'], c); the
  report evaluates every row, before and after, with the Evaluator under
  keys['reporting'] (its batch c of cfg.batch_size rows, in row order, under
  fold_in(keys['reporting'], c)).
  """

  def __init__(self, evaluator: evaluate.Evaluator, variables, attack_config,
               keys: dict[str, jax.Array], score_fns: dict[str, Callable],
               extra_stats_fn: Callable | None, fixed_stats_fn: Callable | None = None):
    self.config = evaluator.config
    self.evaluator = evaluator
    self.state = variables
    self.cfg = attack_config
    self.keys = keys
    self.dequantization = self.config.eval.dequantization
    self.score_list = list(score_fns.values())
    # Compiled once: other models' forward passes, op by op, would be slow.
    self.extra_stats_fn = None if extra_stats_fn is None else jax.jit(extra_stats_fn)
    self.fixed_stats_fn = fixed_stats_fn
    dequantization = self.dequantization

    def own_stats_fn(own_variables, x, k):
      return evaluator.terms(own_variables, x, k, dequantization)

    def stats_fn(own_variables, x, k):
      return {**own_stats_fn(own_variables, x, k), **extra_stats_fn(x, k)}
    # Every attack of the section is a row of one objective: one compilation per model, or
    # two when some scores read other models' terms: only their rows pay for those models'
    # forward and backward passes.
    self.needs_extra = self._needs_extra(score_fns, own_stats_fn, extra_stats_fn)
    zero = lambda stats: jnp.zeros_like(stats['log_px'])
    self.objectives = {False: attacks.combined_objective(own_stats_fn, {
        name: (zero if needs else fn)
        for (name, fn), needs in zip(score_fns.items(), self.needs_extra)})}
    if any(self.needs_extra):
      self.objectives[True] = attacks.combined_objective(stats_fn, score_fns)

  def _needs_extra(self, score_fns, own_stats_fn, extra_stats_fn) -> list[bool]:
    """Per score: does it read a term only extra_stats_fn gives (traced, not run)?"""
    if extra_stats_fn is None:
      return [False] * len(score_fns)
    probe = jax.ShapeDtypeStruct((2,) + tuple(self.evaluator.image_shape), jnp.float32)
    own = jax.eval_shape(own_stats_fn, self.state, probe, jax.random.PRNGKey(0))
    own.update(self.fixed(np.zeros((2,) + tuple(self.evaluator.image_shape), np.uint8)))
    needs = []
    for fn in score_fns.values():
      try:
        jax.eval_shape(fn, own)
        needs.append(False)
      except KeyError:
        needs.append(True)
    return needs

  def evaluate(self, images: np.ndarray, key: jax.Array | None = None) -> dict[str, np.ndarray]:
    """The ordinary evaluation: batches of cfg.batch_size, batch c's noise from fold_in(key, c).

    key: default the reporting key.
    """
    key = self.keys['reporting'] if key is None else key
    stats = self.evaluator(self.state, images, batch_size=self.cfg.batch_size,
                           dequantization=self.dequantization, key=key)
    if self.extra_stats_fn is not None:
      bs = self.cfg.batch_size
      extra = [jax.device_get(self.extra_stats_fn(
          jnp.asarray(images[i:i + bs], jnp.float32), jax.random.fold_in(key, i // bs)))
               for i in range(0, len(images), bs)]
      stats.update({k: np.concatenate([np.asarray(e[k]) for e in extra]) for k in extra[0]})
    stats.update(self.fixed(images))
    return stats

  def fixed(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient-free per-image terms of uint8 images ({} without fixed_stats_fn)."""
    if self.fixed_stats_fn is None:
      return {}
    return {k: np.asarray(v, np.float32) for k, v in self.fixed_stats_fn(images).items()}

  def objective_values(self, stats: dict, args: tuple) -> np.ndarray:
    """The combined objective of evaluated statistics (rows of args), as pgd scores it."""
    choice, sign, target = (np.asarray(a, np.float32) for a in args)
    terms = [sign * stats['log_p_discrete'], -np.abs(stats['bits_per_dim'] - target)]
    terms += [sign * np.asarray(fn(stats), np.float32) for fn in self.score_list]
    # Each row's chosen column (a score that is not finite on a row it does not attack
    # must not spoil that row).
    chosen = np.argmax(choice, axis=-1)[:, None]
    return np.take_along_axis(np.stack(terms, axis=-1), chosen, axis=-1)[:, 0]

  def attack(self, images: np.ndarray, epsilon: np.ndarray, args: tuple) -> dict:
    """Attacks rows of images (each with its epsilon and objective args), batch by batch.

    Returns the attacked images, the objective under the selection key before and after
    (pgd's own judgement), the statistics and the objective under the reporting key
    before and after (an independent evaluation), the trace and the first-order promise.
    """
    bs = self.cfg.batch_size
    num = len(images)

    def padded(a, rows_of):
      """Rows rows_of of a, zero-padded to whole batches."""
      a = np.asarray(a)[rows_of]
      out = np.zeros((-(-len(a) // bs) * bs,) + a.shape[1:], a.dtype)
      out[:len(a)] = a
      return out
    # Rows whose score reads other models' terms form their own batches (the objective
    # with those models); the others never run them.
    column_needs = np.array([False, False] + list(self.needs_extra))
    row_needs = column_needs[np.argmax(np.asarray(args[0]), axis=-1)]
    # Gradient-free terms come from the originals and stay fixed during the attack.
    all_args = tuple(args) + (self.fixed(np.asarray(images)),)
    chunk = 0  # numbers every batch of the attack: its gradient and selection keys
    parts = []  # (rows of images, that batch's AttackResult fields for them)
    for needs in (False, True):
      rows_of = np.flatnonzero(row_needs == needs)
      if not rows_of.size:
        continue
      images_p, eps_p = padded(images, rows_of), padded(epsilon, rows_of)
      args_p = jax.tree.map(lambda a, rows_of=rows_of: padded(a, rows_of), all_args)
      for start in range(0, len(images_p), bs):
        rows = slice(start, start + bs)
        result = attacks.pgd_attack(
            self.objectives[needs], images_p[rows], epsilon=eps_p[rows],
            num_steps=self.cfg.num_steps, key=jax.random.fold_in(self.keys['gradient'], chunk),
            noise_draws=self.cfg.noise_draws,
            select_key=jax.random.fold_in(self.keys['selection'], chunk),
            mesh=self.evaluator.mesh,
            objective_args=(self.state,) + jax.tree.map(lambda a, rows=rows: jnp.asarray(a[rows]),
                                                        args_p))
        chunk += 1
        real = rows_of[start:start + bs]
        n = len(real)
        parts.append((real, {
            'images': result.images[:n], 'trace': result.trace[:, :n],
            'objective_before': result.objective_before[:n],
            'objective_after': result.objective_after[:n],
            'first_order_gain': result.first_order_gain[:n], 'edge_share': result.edge_share[:n]}))

    def gather(name):
      first = parts[0][1][name]
      if name == 'trace':
        out = np.zeros((first.shape[0], num), first.dtype)
        for real, fields in parts:
          out[:, real] = fields[name]
        return out
      out = np.zeros((num,) + first.shape[1:], first.dtype)
      for real, fields in parts:
        out[real] = fields[name]
      return out
    attacked = gather('images')
    before_stats = self.evaluate(np.asarray(images))
    after_stats = self.evaluate(attacked)
    return {
        'images': attacked,
        'trace': gather('trace'),
        'selection_before': gather('objective_before'),
        'selection_after': gather('objective_after'),
        'first_order_gain': gather('first_order_gain'),
        'edge_share': gather('edge_share'),
        'before_stats': before_stats,
        'after_stats': after_stats,
        'objective_before': self.objective_values(before_stats, args),
        'objective_after': self.objective_values(after_stats, args),
    }


def _flip_fraction(log_p: np.ndarray, reference_median: float, is_ood: bool) -> float:
  """In-distribution images less likely than the other set's median image, or OOD images
  more likely than the in-distribution median."""
  return float(np.mean(log_p > reference_median) if is_ood else np.mean(log_p < reference_median))


class _Rows:
  """The attacks of the section as rows of one batch: images, epsilon and objective args."""

  def __init__(self, num_choices: int):
    self.num_choices = num_choices
    self.parts = []   # (meta dict, slice)
    self._images, self._eps, self._choice, self._sign, self._target = [], [], [], [], []
    self._size = 0

  def add(self, images, choice: int, sign: float, target, **meta) -> None:
    """meta must hold 'epsilon' (levels); the rest describes the row for the report."""
    n = len(images)
    self.parts.append((meta, slice(self._size, self._size + n)))
    self._size += n
    self._images.append(images)
    self._eps.append(np.full(n, meta['epsilon'], np.float32))
    onehot = np.zeros((n, self.num_choices), np.float32)
    onehot[:, choice] = 1.0
    self._choice.append(onehot)
    self._sign.append(np.full(n, sign, np.float32))
    self._target.append(np.broadcast_to(np.asarray(target, np.float32), (n,)))

  def arrays(self):
    return (np.concatenate(self._images), np.concatenate(self._eps),
            (np.concatenate(self._choice), np.concatenate(self._sign),
             np.concatenate(self._target)))


def run(evaluator: evaluate.Evaluator, variables, images: dict[str, np.ndarray], *,
        ood_labels: list[str], attack_config: ml_collections.ConfigDict, key: jax.Array,
        fig_dir: str, model_name: str, title: str, in_label: str = 'test',
        score_fns: dict[str, Callable] | None = None,
        extra_stats_fn: Callable | None = None,
        fixed_stats_fn: Callable | None = None) -> dict:
  """Attacks one model; returns the JSON-able entry for results['models'][model]['attacks'].

  images: label -> uint8 [N, H, W, C] (the first attack_config.examples of each are used).
  evaluator: the model's Evaluator; variables: what evaluate.load_state_for_eval returns.
  key: the run key; the gradient, selection and reporting keys are folded from it
    (attack_keys) and recorded in the result's 'keys'.
  score_fns: name -> score_fn(stats) -> [B], higher = more OOD, differentiable in jax;
    default: bits/dim alone ('log p(x)').
  extra_stats_fn: optional (x float pixels, key) -> dict of further per-image terms
    (e.g. another model's log_px) that score functions read; merged into the stats.
  fixed_stats_fn: optional (uint8 images [N, H, W, C]) -> dict of per-image terms without
    a gradient (e.g. a compressor's code length): the attack holds the original's value
    fixed, the reported numbers recompute it on the attacked images.
  """
  start = time.time()
  cfg = attack_config
  model_config = evaluator.config
  if score_fns is None:
    score_fns = {'log p(x)': lambda stats: stats['bits_per_dim']}
  score_names = list(score_fns)
  keys = attack_keys(key)
  attacker = _Attacker(evaluator, variables, cfg, keys, score_fns, extra_stats_fn,
                       fixed_stats_fn)
  labels = [in_label] + list(ood_labels)
  sets = {l: np.asarray(images[l][:cfg.examples]) for l in labels}
  headline = float(cfg.headline_epsilon)
  epsilons = sorted({float(e) for e in cfg.epsilons} | {headline})
  num_dims = train_state_lib.num_dims(model_config)
  nats_per_bit = num_dims * np.log(2.0)

  # Clean statistics first: the targets and medians the attacks are measured against.
  clean = {l: attacker.evaluate(sets[l]) for l in labels}
  in_median = float(np.median(clean[in_label]['log_p_discrete']))
  in_mean_bpd = float(clean[in_label]['bits_per_dim'].mean())
  ood_median = float(np.median(np.concatenate([clean[l]['log_p_discrete'] for l in ood_labels])))
  ood_mean_bpd = float(np.mean(np.concatenate([clean[l]['bits_per_dim'] for l in ood_labels])))

  def reference(label):
    """(median log p, mean bits/dim) of the set an image of `label` is compared with."""
    return (ood_median, ood_mean_bpd) if label == in_label else (in_median, in_mean_bpd)

  rows = _Rows(2 + len(score_names))
  for label in labels:
    for objective, sign in (('raise', 1.0), ('lower', -1.0)):
      for eps in epsilons:
        rows.add(sets[label], 0, sign, 0.0, kind='log_p', set=label, objective=objective,
                 epsilon=eps)
    rows.add(sets[label], 1, 0.0, reference(label)[1], kind='log_p', set=label,
             objective='target', epsilon=headline)
  # Evasion: OOD images pushed to score as in-distribution (sign -1), in-distribution
  # images pushed to score as OOD (sign +1).
  for index, name in enumerate(score_names):
    for label in labels:
      rows.add(sets[label][:cfg.evasion_examples or None], 2 + index,
               1.0 if label == in_label else -1.0, 0.0,
               kind='evade', set=label, score=name, epsilon=headline)
  images_all, eps_all, args_all = rows.arrays()
  result = attacker.attack(images_all, eps_all, args_all)
  before, after = result['before_stats'], result['after_stats']

  def gains(part) -> dict:
    """The objective's change under the reporting key (honest: an image may lose) and
    under the selection key (never negative: the selection's own judgement)."""
    reported = result['objective_after'][part] - result['objective_before'][part]
    selected = result['selection_after'][part] - result['selection_before'][part]
    return {'objective_gain_mean': float(reported.mean()),
            'fraction_improved': float(np.mean(reported > 0)),
            'fraction_worse': float(np.mean(reported < 0)),
            'selection_gain_mean': float(selected.mean()),
            'selection_never_worse': bool(np.all(selected >= 0))}

  table, figure_rows, evaded = [], {}, {}
  for meta, part in rows.parts:
    label = meta['set']
    is_ood = label != in_label
    if meta['kind'] == 'evade':
      evaded[(meta['score'], label)] = part
      continue
    bpd_before, bpd_after = before['bits_per_dim'][part], after['bits_per_dim'][part]
    shift = bpd_after - bpd_before
    median, goal = reference(label)
    row = {
        'set': label, 'objective': meta['objective'], 'epsilon': meta['epsilon'],
        'n': int(part.stop - part.start),
        'bits_per_dim_before': float(bpd_before.mean()),
        'bits_per_dim_after': float(bpd_after.mean()),
        'shift_mean': float(shift.mean()),
        'shift_stderr': float(shift.std(ddof=1) / np.sqrt(shift.size)) if shift.size > 1 else 0.0,
        'shift_max': float(np.max(np.abs(shift))),
        'flip_before': _flip_fraction(before['log_p_discrete'][part], median, is_ood),
        'flip_after': _flip_fraction(after['log_p_discrete'][part], median, is_ood),
        **gains(part),
    }
    if 'log_pz' in after:
      # Which term of log p(x) = log p(z) + log|det| the attack moved (nats per image).
      row['log_pz_shift'] = float((after['log_pz'][part].sum(-1)
                                   - before['log_pz'][part].sum(-1)).mean())
      row['logdet_shift'] = float((total_logdet(after)[part] - total_logdet(before)[part]).mean())
    if meta['objective'] in ('raise', 'lower'):
      sign = 1.0 if meta['objective'] == 'raise' else -1.0
      # The same shift as the selection's noise saw it (sign * log p, nats -> bits/dim).
      row['shift_mean_selection_noise'] = float(
          -sign * row['selection_gain_mean'] / nats_per_bit)
      # The gradient's first-order promise (nats of log p) against what 8-bit images gave.
      row['first_order_bits_per_dim'] = float(
          result['first_order_gain'][part].mean() / nats_per_bit)
      row['first_order_edge_share'] = float(result['edge_share'][part].mean())
    if meta['objective'] == 'target':
      row.update(target=goal, distance_before=float(np.abs(bpd_before - goal).mean()),
                 distance_after=float(np.abs(bpd_after - goal).mean()))
    table.append(row)
    wanted = 'lower' if is_ood else 'raise'
    if meta['epsilon'] == headline and meta['objective'] == wanted:
      k = min(cfg.figure_examples, row['n'])
      sign = 1.0 if wanted == 'raise' else -1.0
      figure_rows[f'{label}_{wanted}'] = {
          'original': sets[label][:k], 'attacked': result['images'][part][:k],
          'bits_per_dim_trace': _trace_to_bits_per_dim(result['trace'][:, part][:, :k], sign,
                                                       model_config),
          'label': label, 'objective': wanted}

  resamples = int(cfg.get('bootstrap_resamples', 1000))

  def with_interval(scores_in, scores_out) -> dict:
    """AUROC (OOD positive), its 95% percentile bootstrap interval and the set sizes."""
    entry = {'auroc': analysis.auroc(scores_in, scores_out),
             'n_in': int(len(scores_in)), 'n_out': int(len(scores_out))}
    if resamples:
      entry['auroc_ci'] = list(ood_metrics.auroc_interval(
          scores_in, scores_out, num_resamples=resamples, confidence=0.95, seed=0))
    return entry

  evasion = {}
  for name, score_fn in score_fns.items():
    def scores(stats, label, fn=score_fn, name=name):
      part = evaded[(name, label)]
      return np.asarray(fn({k: v[part] for k, v in stats.items()}), np.float64)
    in_before, in_after = scores(before, in_label), scores(after, in_label)
    per_set = {}
    for label in ood_labels:
      out_before, out_after = scores(before, label), scores(after, label)
      per_set[label] = {
          'clean': with_interval(in_before, out_before),
          'ood_attacked': with_interval(in_before, out_after),
          'in_attacked': with_interval(in_after, out_before),
          'both_attacked': with_interval(in_after, out_after),
          'score_before': float(out_before.mean()), 'score_after': float(out_after.mean()),
          **gains(evaded[(name, label)]),
      }
      for which in ('clean', 'ood_attacked', 'in_attacked', 'both_attacked'):
        per_set[label][f'auroc_{which}'] = per_set[label][which]['auroc']
    evasion[name] = {
        'epsilon': headline, 'sets': per_set, 'n_per_set': int(len(in_before)),
        'in_score_before': float(in_before.mean()), 'in_score_after': float(in_after.mean()),
        'in': gains(evaded[(name, in_label)]),
    }

  figure = attack_figures.attack_panels(
      os.path.join(fig_dir, f'{model_name}_attacks.png'), figure_rows, headline,
      f'{title}: attacks at epsilon = {headline:g}/255')
  return {
      'settings': {**cfg.to_dict(), 'epsilons': epsilons,
                   'dequantization': attacker.dequantization,
                   'step_rule': 'signed gradient, linearly decaying step from 4*eps/T, '
                                'projected on the L-inf ball and [0, 255] every step'},
      'keys': {'run': key_data(key), **{k: key_data(v) for k, v in keys.items()},
               'fold_ins': {'gradient': GRADIENT_FOLD, 'selection': SELECTION_FOLD,
                            'reporting': REPORTING_FOLD},
               'per_batch': 'batch c of cfg.batch_size images: fold_in(key, c)'},
      'in_label': in_label, 'ood_labels': list(ood_labels),
      'reference': {'ood_median_log_p': ood_median, 'in_median_log_p': in_median,
                    'ood_mean_bits_per_dim': ood_mean_bpd, 'in_mean_bits_per_dim': in_mean_bpd},
      'table': table, 'evasion': evasion, 'figure': figure,
      'image_steps': int(len(images_all) * cfg.num_steps),
      'seconds': time.time() - start,
  }


COMMAND_OBJECTIVES = ('raise', 'lower', 'target')


def attack_images(evaluator: evaluate.Evaluator, variables, images: np.ndarray, *,
                  objective: str, epsilon: float, num_steps: int, noise_draws: int,
                  key: jax.Array, target: float | None = None) -> dict:
  """One attack on a user's images, evaluated as --mode=evaluate would evaluate them.

  objective: 'raise' or 'lower' log p(x), or 'target' (bits/dim toward `target`).
  key: the evaluation's key (evaluate.evaluate_checkpoint uses the run's 'eval' key): the
  reporting key, with batches of model_config.eval.batch_size, so the returned statistics
  are those that --mode=evaluate writes for the returned images. The best iterate is
  selected under fold_in(key, SELECTION_FOLD), independent of it (attack_keys). Returns
  images (uint8), before and after statistics (the evaluation's per-image terms), the
  objective under both keys, the per-step trace and 'keys' (as integers).
  """
  if objective not in COMMAND_OBJECTIVES:
    raise ValueError(f'objective must be one of {COMMAND_OBJECTIVES}, got {objective!r}.')
  if objective == 'target' and target is None:
    raise ValueError("objective='target' needs a target bits/dim.")
  cfg = ml_collections.ConfigDict(dict(num_steps=num_steps, noise_draws=noise_draws,
                                       batch_size=evaluator.config.eval.batch_size))
  keys = attack_keys(key, reporting_key=key)
  attacker = _Attacker(evaluator, variables, cfg, keys, {}, None)
  n = len(images)
  choice = np.zeros((n, 2), np.float32)
  choice[:, 1 if objective == 'target' else 0] = 1.0
  sign = np.full(n, -1.0 if objective == 'lower' else 1.0, np.float32)
  goal = np.full(n, 0.0 if target is None else target, np.float32)
  result = attacker.attack(images, np.full(n, epsilon, np.float32), (choice, sign, goal))
  result['keys'] = {k: key_data(v) for k, v in keys.items()}
  return result


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
  evasion = settings.get('evasion_examples') or settings['examples']
  independent = ('' if settings['dequantization'] == 'midpoint' else
                 ' Selection and report draw independent uniform noise, so an image can '
                 'end slightly worse on its objective under the reported noise than it began '
                 '(the table counts them).')
  return (
      f'Projected gradient attacks (L-inf PGD, Madry et al. 2018) on the input pixels: '
      f'{settings["num_steps"]} signed-gradient steps, the step decaying linearly from '
      f'4·eps/{settings["num_steps"]}, each projected onto the eps-ball in 8-bit levels and onto '
      f'[0, 255]. Dequantization: {noise}. Every iterate is rounded to integers and judged by '
      'the evaluation under a selection noise key; the best one is kept. The numbers are a '
      'fresh evaluation of the returned 8-bit images and of the originals, both under a '
      f'separate reporting key (the same noise for before and after).{independent} '
      f'{settings["examples"]} images per set for raising, lowering and the target, '
      f'{evasion} per side for each evasion; AUROCs with 95% percentile bootstrap intervals '
      f'(both sides resampled, {settings.get("bootstrap_resamples", 1000)} resamples).')


def headline_lines(attacks_result: dict, names: dict[str, str]) -> list[str]:
  """How far the headline epsilon moves the in-distribution set's bits/dim, in words."""
  in_label = attacks_result['in_label']
  eps = float(attacks_result['settings']['headline_epsilon'])
  rows = {r['objective']: r for r in attacks_result['table']
          if r['set'] == in_label and r['epsilon'] == eps}
  if 'raise' not in rows or 'lower' not in rows:
    return []
  up, down = rows['raise'], rows['lower']
  met = -up['shift_mean'] >= 0.5
  lines = [f'At eps = {eps:g}/255 (±{eps:g} levels per pixel) the attack moves '
           f'{names.get(in_label, in_label)} images by {up["shift_mean"]:+.3f} bits/dim on '
           f'average when raising log p(x) (largest {up["shift_max"]:.3f}) and by '
           f'{down["shift_mean"]:+.3f} when lowering it (largest {down["shift_max"]:.3f}); '
           f'raising moves them by at least 0.5 bits/dim on average: **{"yes" if met else "no"}**.']
  if not met:
    lines[-1] += (
        f' Why: to first order the gradient at the originals promised '
        f'{up["first_order_bits_per_dim"]:.3f} bits/dim (every pixel moved to the end of its '
        f'range in the gradient\'s direction), {100 * up["first_order_edge_share"]:.0f}% of it '
        'from pixels at 0 or 255, which can move only one way; the best 8-bit images in the '
        'ball gave far less, so log p(x) bends within a single level (a first-order '
        'promise that the integer images do not keep), while lowering it needs no such luck.')
  return lines + ['']


def _auroc_cell(entry: dict) -> str:
  """'0.812 [0.770, 0.851]': the AUROC and its 95% bootstrap interval (when computed)."""
  if 'auroc_ci' not in entry:
    return _f(entry['auroc'])
  low, high = entry['auroc_ci']
  return f'{_f(entry["auroc"])} [{_f(low)}, {_f(high)}]'


def render(attacks_result: dict, workdir: str, names: dict[str, str], title: str) -> list[str]:
  """Markdown lines for one model: the epsilon x objective table, evasion AUROCs, the figure."""
  out = [f'### {title}', '', describe(attacks_result['settings']), '']
  out += headline_lines(attacks_result, names)
  rows = []
  for row in attacks_result['table']:
    is_in = row['set'] == attacks_result['in_label']
    objective = OBJECTIVES[row['objective']]
    if row['objective'] == 'target':
      objective += (f' ({_f(row["target"])}; mean distance {_f(row["distance_before"])} → '
                    f'{_f(row["distance_after"])})')
    flip = ('less likely than the OOD median' if is_in
            else 'more likely than the in-distribution median')
    selection = row.get('shift_mean_selection_noise')
    rows.append([names.get(row['set'], row['set']), objective, f'{row["epsilon"]:g}',
                 row['n'], _f(row['bits_per_dim_before']), _f(row['bits_per_dim_after']),
                 f'{row["shift_mean"]:+.3f} ± {1.96 * row.get("shift_stderr", 0.0):.3f}',
                 '' if selection is None else f'{selection:+.3f}',
                 _f(row.get('fraction_worse', 0.0), 2), _f(row['shift_max']),
                 f'{row["log_pz_shift"]:+.1f} / {row["logdet_shift"]:+.1f}',
                 f'{_f(row["flip_before"], 2)} → {_f(row["flip_after"], 2)} ({flip})'])
  out += _table(['set', 'objective', 'eps (levels)', 'images', 'bits/dim before', 'after',
                 'mean shift ± 95%', 'mean shift, selection noise',
                 'fraction of images worse', 'max abs shift', 'Δ log p(z) / Δ log-det (nats)',
                 'fraction ranked past the other set'], rows)
  out += ['', 'Mean shift: bits/dim after minus before under the reporting noise, with 1.96 '
          'standard errors; "selection noise": the same shift as the noise that picked the '
          'best iterate saw it (higher in magnitude when the pick exploited that noise); '
          '"worse": images whose objective fell under the reporting noise.', '']
  rows = []
  for name, entry in attacks_result['evasion'].items():
    for label, m in entry['sets'].items():
      cells = [_auroc_cell(m[w]) if w in m else _f(m[f'auroc_{w}'])
               for w in ('clean', 'ood_attacked', 'in_attacked', 'both_attacked')]
      rows.append([name, names.get(label, label), f'{entry["epsilon"]:g}',
                   entry.get('n_per_set', ''), *cells])
  if rows:
    out += ['Each OOD score under its own evading attack (AUROC, OOD positive, with its 95% '
            'percentile bootstrap interval; OOD images pushed to score as in-distribution, '
            'in-distribution images pushed to score as OOD; each side compared with the other '
            'side clean):', '']
    out += _table(['score', 'OOD set', 'eps (levels)', 'images a side', 'AUROC clean',
                   'OOD attacked', 'in-dist. attacked', 'both attacked'], rows)
    out += ['']
  if attacks_result.get('figure'):
    out += [f'![{title} attacks]({os.path.relpath(attacks_result["figure"], workdir)})', '',
            'Each row: the original, the perturbation (attacked − original, in levels, colour '
            'scale ±eps), the attacked image, and bits/dim of the rounded iterate over the '
            'steps (under the selection noise).', '']
  out += [f'Attack time: {_f(attacks_result["seconds"], 0)} s.', '']
  return out


def render_section(results: dict, workdir: str) -> list[str]:
  """The report's whole attack section from results.json's shape: HEADING, then every model
  with results['models'][model]['attacks'] (models without one are left out)."""
  names = {s['label']: s['display'] for s in results['sets']}
  out = [HEADING, '']
  attacked = {m: r['attacks'] for m, r in results['models'].items() if r.get('attacks')}
  if not attacked:
    return out + ['No attacks were run (experiment.attacks.enabled is False, or no model has '
                  'a likelihood smooth in the pixels).', '']
  for model, entry in attacked.items():
    out += render(entry, workdir, names, eval_plan.MODEL_TITLES.get(model, model))
  discrete = [eval_plan.MODEL_TITLES.get(m, m) for m in results['models'] if m not in attacked]
  if discrete:
    out += [', '.join(discrete) + ' not attacked: a discrete likelihood is piecewise constant '
            'in the pixel values, so a gradient attack has nothing to follow.', '']
  return out
