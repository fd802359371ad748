"""report.md from the results of pipeline.run_pair: tables, figures and the conclusions.

Every number in the report comes from results.json (written beside it); the
bits/dim tables are the means of the eval/*.npz files it names.
"""

from __future__ import annotations

import os

from glow_ood import model_kinds
from glow_ood.experiment import attack_section
from glow_ood.experiment import background_tuning
from glow_ood.experiment import eval_plan
from glow_ood.experiment import paper_numbers
from glow_ood.scores import suite

_REVERSED = suite.REVERSED_LOG_P

GRAYING_SHORT = {'grey': 'toward grey 128', 'mean_image': 'toward the mean image'}

# Section headings; tests check that each is present.
HEADINGS = (
    '## 1. Bits/dim on train, test and OOD test (paper, Figures 1 and 3)',
    '## 2. Histograms of log p(x) (paper, Figures 2 and 3)',
    '## 3. The two terms: log p(z) and log |det| (paper, Figure 4)',
    '## 4. Bits/dim across training (paper, Figure 5)',
    '## 5. Section 5: data statistics, second-order prediction, graying',
    '### 5.1 Per-channel means and variances (paper, Figure 6)',
    '### 5.2 Second-order prediction vs measured difference',
    '### 5.3 Graying',
    '## 6. OOD detection: scores beyond log p(x)',
    '## 7. What this shows',
    '## 8. Run details',
    '## 9. Samples',
)

OOD_HEADINGS = (
    '### 6.1 The declared detector on the OOD sets',
    '### 6.2 Every score on the OOD sets',
    '### 6.3 Stress suite: which shift fools which score',
    '### 6.4 Corruption suite: the declared detector at each severity',
)
# The declared detector's target on the far-OOD stress sets.
FAR_OOD_TARGET = 0.95

APPROXIMATIONS = """\
What each prediction assumes (all predict E_q[log p(x)] - E_p*[log p(x)], nats per image,
p* = in-distribution test images, q = OOD images):
- **measured**: the difference of the evaluated means (discrete bound, uniform dequantization),
  with its standard error.
- **closed form, exact-for-linear** (CV-Glow only): the first level's ActNorm scales and 1x1-conv
  weights give z = squeeze(x) M + const; with the additive couplings taken as the identity and one
  N(0, 1) prior on the whole first-level output, log p is quadratic and the second-order
  expansion is exact: -1/2 sum_c (M M^T)_cc sum_{h,w} (var_q - var_p*)_{h,w,c}, variances in the
  squeezed space. Ignores the trained couplings, the learned split prior and later levels, and
  all covariances between pixels and between channels.
- **closed form, paper alpha**: the same with the paper's coefficient alpha_c = prod_k sum_j
  u_{k,c,j} (u = actnorm-scaled 1x1 weights) in place of (M M^T)_cc; it also adds within-step
  cross terms and treats each channel as staying in its own channel across steps.
- **trace, Hutchinson (diagonal)**: 1/2 sum_i H_ii (var_q - var_p*)_i with H the Hessian of the
  real model's log p at x0 = the mean p* image, estimated with Rademacher probes (Hessian-vector
  products); keeps the whole nonlinear model but drops all covariances and assumes both sets
  share the mean x0 (the dropped first-order term is listed).
- **trace, samples (full cov.)**: 1/2 Tr{H (S_q - S_p*)} with the full sample covariances of a
  subset of each set, one HVP per image; no diagonal assumption, but sampling error, and still
  second order around the shared mean x0."""


def model_summary(model_cfg: dict) -> str:
  """One cell describing a model block (its kind's summary)."""
  return model_kinds.kind_of(model_cfg).summary(model_cfg)


def _f(value, digits=3) -> str:
  return f'{value:.{digits}f}'


def _pm(value, error, digits=3) -> str:
  return f'{value:.{digits}f} ± {error:.{digits}f}'


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return lines


def _img(path: str, workdir: str, alt: str) -> str:
  return f'![{alt}]({os.path.relpath(path, workdir)})'


def _bpd_cell(summary: dict) -> str:
  """Mean bits/dim, with the count of images left out of it because log p(x) overflowed."""
  cell = _f(summary['bits_per_dim'])
  k = summary.get('n_overflowed', 0)
  return f'{cell} ({k} of {summary["n"]} at ∞)' if k else cell


def overflow_lines(results: dict) -> list[str]:
  """A paragraph naming every set on which a model's likelihood overflowed (none: nothing)."""
  names = {s['label']: s['display'] for s in results['sets']}
  names.update(results.get('stress_descriptions', {}))
  found = []
  for model, res in results['models'].items():
    for group in ('sets', 'stress', 'corruptions'):
      for label, entry in res.get(group, {}).items():
        if entry.get('n_overflowed'):
          name = (f'{entry["corruption"]} severity {entry["severity"]}' if 'corruption' in entry
                  else names.get(label, label))
          found.append(f'{eval_plan.MODEL_TITLES[model]} on {name}: '
                       f'{entry["n_overflowed"]} of {entry["n"]}')
  if not found:
    return []
  return ['**Images with an infinite −log p(x).** On these images log p(z) left float32\'s '
          'range (log p(x) = −∞, bits/dim = +∞): ' + '; '.join(found) + '. They are left out '
          'of the mean bits/dim and kept in every AUROC: a score ranks them as its arithmetic '
          'gives (−log p(x): +∞, most OOD; "log p(x) reversed": −∞, its blind spot), and a '
          'score undefined on them (∞ − ∞, a density at an infinite point) ranks them +∞.', '']


def _yes(flag: bool) -> str:
  return 'yes' if flag else 'no'


def conclusions(results: dict) -> list[str]:
  """Statements generated from the numbers: the paper's findings, checked one by one."""
  in_name = results['in_name']
  lines = []
  names = {s['label']: s['display'] for s in results['sets']}
  ood_labels = [s['label'] for s in results['sets'] if s['is_ood']]
  for model, res in results['models'].items():
    title = eval_plan.MODEL_TITLES[model]
    test = res['sets']['test']
    for label in ood_labels:
      ood = res['sets'][label]
      lower = ood['bits_per_dim'] < test['bits_per_dim']
      lines.append(
          f'- {title}: {names[label]} gets lower bits/dim than {in_name} test: **{_yes(lower)}** '
          f'({_f(ood["bits_per_dim"])} vs {_f(test["bits_per_dim"])}).')
      dz = ood.get('log_pz', 0.0) - test.get('log_pz', 0.0)
      dd = ood.get('logdet', 0.0) - test.get('logdet', 0.0)
      if 'log_pz' not in test:
        pass  # not a flow: no latent/volume split
      elif model == 'glow':
        lines.append(
            f'  - Of the log-likelihood gap ({_f(ood["log_px"] - test["log_px"], 1)} nats), '
            f'log p(z) contributes {_f(dz, 1)} and the log-det {_f(dd, 1)}; the larger share comes '
            f'from the **{"log-det (volume)" if abs(dd) > abs(dz) else "log p(z)"}** term.')
      else:
        lines.append(
            f'  - Constant volume: the log-det differs by {_f(dd, 4)} nats between the sets, so '
            f'the whole gap ({_f(dz, 1)} nats) is in log p(z).')
      curve = res['curves']['bits_per_dim']
      if res['curves']['steps'] and curve.get(label):
        always = all(o < t for o, t in zip(curve[label], curve['test']))
        lines.append(
            f'  - Lower at every evaluated checkpoint ({len(res["curves"]["steps"])} of them, '
            f'subsets): **{_yes(always)}**.')
      auroc = res['ood_metrics'][label]['log p(x)']['auroc']
      lines.append(
          f'  - AUROC of bits/dim as an OOD score: {_f(auroc)} '
          f'({"below 0.5: the OOD set is ranked as *more* in-distribution" if auroc < 0.5 else "above 0.5"}).')
      so = res['second_order'].get(label)
      if so is None:
        lines.append('  - No second-order prediction: this likelihood is discrete, piecewise '
                     'constant in the pixel values, so it has no Hessian in them.')
      measured = so['measured'] if so else 0.0
      preds = {'Hutchinson trace': (so['hutchinson'], so['hutchinson_stderr'])} if so else {}
      if so and 'sample_form' in so:
        preds['sample-covariance trace'] = (so['sample_form'], so['sample_form_stderr'])
      if so and 'closed_form' in so:
        preds['closed form (exact-for-linear)'] = (so['closed_form']['exact_for_linear'], 0.0)
        preds['closed form (paper alpha)'] = (so['closed_form']['paper_alpha'], 0.0)

      def sign_check(name, value, stderr):
        noisy = ' (within 2 standard errors of 0: no sign)' if abs(value) < 2 * stderr else ''
        ratio = _f(value / measured, 2) if measured else 'inf'
        return (f'{name} {_f(value, 1)} (x{ratio}): '
                f'**{_yes((value > 0) == (measured > 0))}**{noisy}')
      signs = ', '.join(sign_check(k, v, e) for k, (v, e) in preds.items())
      if so:
        lines.append(f'  - The second-order prediction has the sign of the measured difference '
                     f'({_f(measured, 1)} nats; each prediction\'s ratio to it in brackets): '
                     f'{signs}.')
      for target, gray in res['graying'].items():
        rises = {l: gray[l]['mean_log_prob'][-1] > gray[l]['mean_log_prob'][0] for l in gray}
        lines.append(f'  - Graying {GRAYING_SHORT[target]} raises mean log p(x) (last blend vs '
                     'none): ' + ', '.join(f'{names[l]} **{_yes(r)}**'
                                            for l, r in rises.items()) + '.')
      detector = res.get('detector')
      if detector and detector in res['ood_metrics'][label]:
        m = res['ood_metrics'][label][detector]
        lines.append(
            f'  - The declared detector **{detector}** (fixed in the config before any OOD set '
            f'was seen): AUROC {_ci(m)} on {names[label]}; AUROC >= 0.99: '
            f'**{_yes(m["auroc"] >= 0.99)}**. Scores below 0.5 (ranking {names[label]} as more '
            'in-distribution): ' + (', '.join(
                k for k, m in res['ood_metrics'][label].items() if m['auroc'] < 0.5) or 'none')
            + '.')
    lines += _far_ood_lines(results, res)
    for label, entry in sorted(res.get('stress', {}).items()):
      fooled = [k for k, m in entry['metrics'].items() if m['auroc'] < 0.5]
      if fooled:
        lines.append(f'  - Stress set {label[len("stress_"):]} fools (AUROC < 0.5): '
                     + ', '.join(fooled) + '.')
  stats = results['data_stats']['sets']
  for label in ood_labels:
    lower_var = [q < p for q, p in zip(stats[label]['variance_sum'], stats['test']['variance_sum'])]
    lines.append(f'- {names[label]} has a lower summed per-pixel variance than {in_name} test '
                 f'in every channel: **{_yes(all(lower_var))}** (Section 5 predicts higher '
                 'likelihood for the lower-variance set).')
  return lines


def _ci(m: dict, digits: int = 3) -> str:
  """'0.953 [0.941, 0.964]': an AUROC and its 95% bootstrap interval (when computed)."""
  if 'auroc_ci' not in m:
    return _f(m['auroc'], digits)
  low, high = m['auroc_ci']
  return f'{_f(m["auroc"], digits)} [{_f(low, digits)}, {_f(high, digits)}]'


def _far_ood_lines(results: dict, res: dict) -> list[str]:
  """Where the declared detector lands on the far-OOD stress sets, darkening, near-OOD."""
  detector, stress = res.get('detector'), res.get('stress', {})
  far = [l for l in results.get('far_ood_stress', []) if l in stress]
  if not detector or not far or detector not in stress[far[0]]['metrics']:
    return []
  aurocs = {l: stress[l]['metrics'][detector]['auroc'] for l in far}
  misses = {l: a for l, a in aurocs.items() if a < FAR_OOD_TARGET}
  lines = [f'  - {detector} on the {len(far)} far-OOD stress sets (noise, constant, contrast, '
           f'brightening, inversion): lowest AUROC {_f(min(aurocs.values()))}; all >= '
           f'{FAR_OOD_TARGET}: **{_yes(not misses)}**' + (
               '; misses: ' + ', '.join(f'{l[len("stress_"):]} {_f(a)} '
                                        f'({_f(FAR_OOD_TARGET - a)} short)'
                                        for l, a in misses.items()) if misses else '') + '.']
  if 'stress_brightness-64' in stress:
    lines.append(f'  - Darkened by 64 levels (hard for every score): {detector} AUROC '
                 f'{_ci(stress["stress_brightness-64"]["metrics"][detector])}.')
  return lines


def _short(score: str) -> str:
  """A narrow column header for the stress table."""
  return (score.replace('log p(x)', 'log p').replace('input complexity', 'IC').replace('likelihood ratio', 'LR')
          .replace('typicality', 'typ.').replace('log p(z_', 'z_').replace(')', '')
          .replace('(', '').replace('DoSE ', 'DoSE-').replace('JPEG 2000', 'JP2'))


def _auroc_cell(m: dict) -> str:
  """A stress-table cell: AUROC and interval, bold below 0.5 (the shift fools the score)."""
  text = _ci(m, 2)
  return f'**{text}**' if m['auroc'] < 0.5 else text


def ood_detection(results: dict, workdir: str) -> list[str]:
  """Section 6: the declared detector, every score's metrics, the stress and corruption tables."""
  in_name = results['in_name']
  names = {s['label']: s['display'] for s in results['sets']}
  ood_labels = [s['label'] for s in results['sets'] if s['is_ood']]
  models = results['models']
  exp = results.get('experiment', {})
  subsets = results.get('subsets', {})
  sizes = ', '.join(f'{names.get(l, l)} {v["n"]}' for l, v in subsets.items())
  out = ['Every score gives one number per image, higher = more OOD; OOD is the positive class '
         f'and the in-distribution test subset the negative one. Scores are fitted on the '
         f'{in_name} train subset alone (never on an OOD set). Every subset is drawn by a seeded '
         f'shuffle over its whole split (subset_seed {next(iter(subsets.values()), {}).get("subset_seed", 0)}; '
         f'indices in each eval/*.npz): {sizes} images. AUROCs carry a 95% bootstrap interval '
         f'({exp.get("bootstrap_resamples", "")} resamples, in- and out-of-distribution images '
         'resampled independently). **The headline is the detector declared in the config** '
         f'(`experiment.detector`), fixed before any OOD set was evaluated; "{_REVERSED}" '
         '(bits/dim negated: higher likelihood = more OOD) stands beside every score, so a score '
         'that only flips the likelihood\'s sign shows as no better than it. Per-image values: '
         '`scores/<model>/<set>.npz`. "typicality (batch b)" scores batches of b images.', '']
  first = next(iter(models.values()))
  out += ['| score | what it computes | needs | reference |', '|---|---|---|---|']
  for name, d in first['score_descriptions'].items():
    if any(name in m['ood_metrics'][l] for m in models.values() for l in ood_labels):
      out.append(f'| {name} | {d["description"]} | {d["needs"]} | {d["reference"]} |')

  out += ['', OOD_HEADINGS[0], '']
  rows = []
  for model, res in models.items():
    detector = res.get('detector')
    for label in ood_labels:
      metrics = res['ood_metrics'][label]
      best = res.get('best_on_test_set', {}).get(label)
      if detector not in metrics:
        continue
      d = metrics[detector]
      rows.append([eval_plan.MODEL_TITLES[model], names[label], detector, f'**{_ci(d)}**',
                   f'{d["n_in"]} / {d["n_out"]}', _ci(metrics['log p(x)']),
                   _ci(metrics[_REVERSED]) if _REVERSED in metrics else '',
                   f'{best} {_ci(metrics[best])}' if best else ''])
  out += _table(['model', 'OOD set', 'declared detector', 'AUROC [95% CI]', 'images in / out',
                 'log p(x) (bits/dim)', _REVERSED,
                 'best of all scores, *picked on this test OOD set*'], rows)
  out += ['', 'The last column is a selection on the test OOD set itself (the highest AUROC '
          'among every single-image score); it is shown for comparison, not as a result.', '']

  out += [OOD_HEADINGS[1], '']
  rows = []
  for model, res in models.items():
    for label in ood_labels:
      for score, m in res['ood_metrics'][label].items():
        bold = (lambda t: f'**{t}**') if score == res.get('detector') else (lambda t: t)
        rows.append([eval_plan.MODEL_TITLES[model], names[label], bold(score),
                     bold(_ci(m)), _f(m['auprc']), _f(m['fpr_at_95_tpr']),
                     paper_numbers.reported_auroc(in_name, label, score.split(' (batch')[0])
                     if '(batch' not in score else ''])
  out += _table(['model', 'OOD set', 'score', 'AUROC [95% CI]', 'AUPRC', 'FPR@95%TPR',
                 'AUROC reported elsewhere'], rows)
  out += ['', '**Bold**: the declared detector.', '']
  out += background_tuning.report_lines(results)
  for model, res in models.items():
    if 'scores' in res.get('figures', {}):
      out += [f'{eval_plan.MODEL_TITLES[model]}: log p(x) and the declared detector on '
              f'{names[ood_labels[0]]}, in- against out-of-distribution:', '',
              _img(res['figures']['scores'], workdir, f'{model} scores'), '']

  stress_labels = sorted({l for res in models.values() for l in res.get('stress', {})})
  if stress_labels:
    far = set(results.get('far_ood_stress', []))
    out += [OOD_HEADINGS[2], '',
            f'The {in_name} test subset transformed (and synthetic sets), each scored as an OOD '
            'set: its mean bits/dim beside the test subset\'s, and the AUROC [95% CI] of every '
            'score against the untransformed test subset. An AUROC below 0.5 (**bold**) means '
            'the score calls the shifted images *more* in-distribution than the real ones: the '
            'shift fools it. Far-OOD sets (marked †: noise, constant, contrast, brightening, '
            f'inversion) are the ones a detector must catch (target {FAR_OOD_TARGET}); flips, '
            'rotations and small shifts are near-OOD (published detectors sit at 0.51-0.65 '
            'there); darkening is hard for every score.', '']
    descriptions = results.get('stress_descriptions', {})
    for model, res in models.items():
      scores = [k for k in next(iter(res['stress'].values()))['metrics']]
      header = ['stress set', 'bits/dim'] + [_short(k) for k in scores]
      rows = [[f'{names.get("test", "test")} (reference)', _f(res['sets']['test']['bits_per_dim']),
               *[''] * len(scores)]]
      for label in stress_labels:
        entry = res['stress'][label]
        cells = [_auroc_cell(entry['metrics'][k]) for k in scores]
        mark = ' †' if label in far else ''
        rows.append([descriptions.get(label, label) + mark, _bpd_cell(entry)] + cells)
      n = next(iter(res['stress'].values()))['metrics'][scores[0]]
      out += [f'{eval_plan.MODEL_TITLES[model]} (AUROC [95% CI]; {n["n_in"]} test images '
              f'against {n["n_out"]} per stress set):', '']
      out += _table(header, rows) + ['']
      out += [l.strip() for l in _far_ood_lines(results, res)] + ['']

  corrupted = {l for res in models.values() for l in res.get('corruptions', {})}
  if corrupted:
    descriptions = results.get('corruption_descriptions', {})
    out += [OOD_HEADINGS[3], '',
            f'The MNIST-C corruptions (Mu & Gilmer 2019), computed here, of the {in_name} test '
            'subset, at each severity (1 mild, 5 severe): the declared detector\'s AUROC [95% CI] '
            'against the untransformed test subset. Every score\'s metrics for every corruption '
            'are in results.json (`models.<model>.corruptions`).', '']
    for model, res in models.items():
      entries = res.get('corruptions', {})
      detector = res.get('detector')
      if not entries or detector is None:
        continue
      severities = sorted({e['severity'] for e in entries.values()})
      table = {}
      for e in entries.values():
        table.setdefault(e['corruption'], {})[e['severity']] = e
      rows = []
      for name, by_severity in table.items():
        cells = [_auroc_cell(by_severity[s]['metrics'][detector]) if s in by_severity else ''
                 for s in severities]
        rows.append([f'{name} ({descriptions.get(name, "")})'] + cells)
      e = next(iter(entries.values()))['metrics'][detector]
      out += [f'{eval_plan.MODEL_TITLES[model]}, {detector} ({e["n_in"]} test images against '
              f'{e["n_out"]} per corrupted set):', '']
      out += _table(['corruption'] + [f'severity {s}' for s in severities], rows) + ['']
  return out + overflow_lines(results)


def render(results: dict, workdir: str) -> str:
  in_name = results['in_name']
  sets = results['sets']
  names = {s['label']: s['display'] for s in sets}
  ood_labels = [s['label'] for s in sets if s['is_ood']]
  models = results['models']
  out = [f'# {results["pair"]} ({results["variant"]}): do deep generative models know what '
         "they don't know?", '',
         ', '.join(eval_plan.MODEL_DESCRIPTIONS.get(m, eval_plan.MODEL_TITLES[m]) for m in models)
         + f' trained on **{in_name}**, evaluated on its train and test splits and on '
         + ', '.join(f'**{names[l]}**' for l in ood_labels) + '. '
         'Bits/dim are the discrete bound with uniform dequantization (lower = more likely); '
         'log terms are nats per image. Paper: Nalisnick et al., ICLR 2019.', '']

  out += [HEADINGS[0], '']
  rows = []
  for model, res in models.items():
    for s in sets:
      summary = res['sets'][s['label']]
      paper_label = s['name'] if s['is_ood'] else s['label']
      paper = paper_numbers.glow_value(in_name, paper_label) if model == 'glow' else '—'
      rows.append([eval_plan.MODEL_TITLES[model], s['display'], summary['n'],
                   _bpd_cell(summary), _f(summary['bits_per_dim_std']), paper])
  out += _table(['model', 'data set', 'N', 'bits/dim (ours)', 'std', 'paper (Glow)'], rows)
  out += ['', 'The paper reports Glow\'s numbers only; CV-Glow it shows as curves (Figure 5), '
          'PixelCNN++ and the VAE as histograms (Figure 3). PixelCNN++\'s bits/dim are exact, '
          'the VAE\'s an importance-weighted bound, Glow\'s a dequantization bound. Ours are '
          'at checkpoint step ' + ', '.join(
              f'{eval_plan.MODEL_TITLES[m]} {r["step"]}' for m, r in models.items()) + '.', '']

  out += [HEADINGS[1], '']
  for model, res in models.items():
    out += [_img(res['figures']['log_px'], workdir, f'{model} log p(x) histogram'), '']

  out += [HEADINGS[2], '']
  rows = []
  flows = {m: r for m, r in models.items() if model_kinds.KINDS[r['kind']].decomposes}
  for model, res in flows.items():
    for s in sets:
      m = res['sets'][s['label']]
      rows.append([eval_plan.MODEL_TITLES[model], s['display'], _f(m['log_px'], 1),
                   _f(m['log_pz'], 1), _f(m['logdet'], 1), _f(m['logdet_actnorm'], 1),
                   _f(m['logdet_invconv'], 1), _f(m['logdet_coupling'], 1)])
  out += _table(['model', 'data set', 'log p(x)', 'log p(z)', 'log-det', 'actnorm', '1x1 conv',
                 'coupling'], rows)
  out += ['', 'log p(x) here is the discrete bound log p(y) - D·n·log 2; log p(z) sums the '
          'priors of all levels; log-det sums all layers (split per kind on the right).', '']
  for model, res in flows.items():
    out += [_img(res['figures']['decomposition'], workdir, f'{model} decomposition'), '']
  others = [eval_plan.MODEL_TITLES[m] for m in models if m not in flows]
  if others:
    out += [', '.join(others) + ' are not flows: no latent/volume split.', '']

  out += [HEADINGS[3], '']
  any_curves = False
  for model, res in models.items():
    curves = res['curves']
    if not curves['steps']:
      continue
    any_curves = True
    labels = [s['label'] for s in sets]
    rows = [[step] + [_f(curves['bits_per_dim'][l][i]) for l in labels]
            for i, step in enumerate(curves['steps'])]
    out += [f'{eval_plan.MODEL_TITLES[model]}, mean bits/dim on subsets of '
            + ', '.join(f'{curves["n"][l]} {names[l]}' for l in labels) + ':', '']
    out += _table(['step'] + [names[l] for l in labels], rows)
    out += ['', _img(res['figures']['curves'], workdir, f'{model} training curves'), '']
  if not any_curves:
    out += ['No model was set to have its checkpoints evaluated (experiment.curve_models).', '']

  out += [HEADINGS[4], '', HEADINGS[5], '']
  stats = results['data_stats']['sets']
  rows = [[v['name'], v['n'], ', '.join(_f(x, 4) for x in v['mean_of_means']),
           ', '.join(_f(x, 4) for x in v['mean_of_variances']),
           ', '.join(_f(x, 2) for x in v['variance_sum'])] for v in stats.values()]
  out += _table(['data set', 'N', 'mean of per-image means', 'mean of per-image variances',
                 'sum over pixels of per-pixel variance'], rows)
  out += ['', 'Per channel, pixels on the model scale [0, 1). The last column is the data-side '
          'factor of Section 5 (sum_{h,w} sigma^2_{h,w,c}).', '',
          _img(results['data_stats']['figure'], workdir, 'per-channel statistics'), '']

  out += [HEADINGS[6], '', APPROXIMATIONS, '']
  rows = []
  smooth = {m: r for m, r in models.items() if r['second_order']}
  for model, res in smooth.items():
    for label in ood_labels:
      so = res['second_order'][label]
      cf = so.get('closed_form')
      rows.append([
          eval_plan.MODEL_TITLES[model], names[label],
          _pm(so['measured'], so['measured_stderr'], 1),
          _f(cf['exact_for_linear'], 1) if cf else 'n/a (affine)',
          _f(cf['paper_alpha'], 1) if cf else 'n/a (affine)',
          _pm(so['hutchinson'], so['hutchinson_stderr'], 1),
          _pm(so['sample_form'], so['sample_form_stderr'], 1) if 'sample_form' in so else '—',
          _f(so['first_order_ignored'], 1)])
  out += _table(['model', 'q (OOD)', 'measured', 'closed form exact-for-linear',
                 'closed form paper alpha', 'trace Hutchinson', 'trace samples',
                 'first-order term (ignored)'], rows)
  out += ['']
  discrete = [eval_plan.MODEL_TITLES[m] for m in models if m not in smooth]
  if discrete:
    out += [', '.join(discrete) + ': no prediction; a discrete likelihood is piecewise constant '
            'in the pixel values, so its Hessian in them is zero almost everywhere.', '']
  for model, res in smooth.items():
    for label in ood_labels:
      so = res['second_order'][label]
      detail = (f'{eval_plan.MODEL_TITLES[model]} vs {names[label]}: '
                f'sum_(h,w)(var_q - var_p*) per channel = '
                + ', '.join(_f(v, 3) for v in so['variance_sum_diff'])
                + f'; log p(x0) at the mean {in_name} test image = {_f(so["log_p_at_x0"], 1)} '
                f'vs {_f(res["sets"]["test"]["log_px"], 1)} averaged over its images'
                + f'; Hutchinson with {so["hutchinson_probes"]} probes')
      if 'sample_form' in so:
        detail += f'; sample form on {so["sample_form_examples"]} images per set'
      if 'closed_form' in so:
        cf = so['closed_form']
        detail += ('; squeezed-space coefficients (M M^T)_cc = '
                   + ', '.join(_f(v, 3) for v in cf['coefficients'])
                   + ', paper alpha_c^2 = ' + ', '.join(_f(v * v, 3) for v in cf['alpha']))
      out += [f'- {detail}.']
      out += ['', _img(res['figures'][f'second_order_{label}'], workdir,
                       f'{model} second order {label}'), '']

  out += [HEADINGS[7], '',
          'Images blended toward a target t, x_a = (1 - a) x + a·t, rounded to integers; the '
          'blend multiplies every per-pixel variance by (1 - a)^2. With t = 128 (the paper) it '
          'also moves every pixel\'s mean toward 128, far from the black background of grey '
          'data sets; with t = the set\'s own mean image the means stay put and only the '
          'variance shrinks (the premise of Section 5). Mean log p(x) (nats) ± standard error:',
          '']
  for model, res in models.items():
    for target, gray in res['graying'].items():
      alphas = next(iter(gray.values()))['alpha']
      rows = [[names[l]] + [_pm(m, e, 1) for m, e in zip(c['mean_log_prob'], c['stderr'])]
              for l, c in gray.items()]
      out += [f'{eval_plan.MODEL_TITLES[model]}, graying {GRAYING_SHORT[target]}; images per '
              'set: ' + ', '.join(f'{c["n"]} {names[l]}' for l, c in gray.items()) + ':', '']
      out += _table(['data set'] + [f'a={a:g}' for a in alphas], rows)
      out += ['']
    out += [_img(res['figures']['graying'], workdir, f'{model} graying'), '']

  out += [HEADINGS[8], ''] + ood_detection(results, workdir)

  out += attack_section.render_section(results, workdir)

  out += [HEADINGS[9], ''] + conclusions(results) + ['']

  out += [HEADINGS[10], '']
  rows = []
  for model, res in models.items():
    t = res.get('timings', {})
    cfg = results['model_configs'][model]
    rows.append([eval_plan.MODEL_TITLES[model], res['step'], model_summary(cfg['model']),
                 f'{cfg["train"]["optimizer"]} lr {cfg["train"]["learning_rate"]:g}, '
                 f'batch {cfg["train"]["batch_size"]}',
                 _f(t.get('train_s', 0.0), 0), _f(t.get('evaluate_s', 0.0), 0),
                 _f(res['analysis_s'], 0), res['workdir']])
  out += _table(['model', 'step', 'model', 'optimizer', 'train s', 'evaluate s', 'analysis s',
                 'workdir'], rows)
  out += ['', f'This invocation took {_f(results["run_wall_clock_s"], 0)} s wall-clock '
          '(training and evaluations already done earlier are reused, their times are the '
          'accumulated ones above). Full numbers: results.json.', '']
  if results.get('phases_s'):
    devices = results.get('devices', {})
    workers = results.get('workers')
    if workers:
      out += [f'Where this invocation\'s time went (wall-clock s; work reused from earlier runs '
              f'costs nothing here). The models ran in {workers["count"]} worker processes side '
              'by side, each pinned to its cores (' + '; '.join(
                  f'{model}: cores {",".join(map(str, w["cores"]))}, '
                  f'{models[model]["devices"]["count"]} {models[model]["devices"]["platform"]} '
                  f'device(s), {_f(w["wall_s"], 0)} s' for model, w in workers['models'].items())
              + '; each model\'s sample grids a task of their own: ' + ', '.join(
                  f'{model} {_f(w["wall_s"], 0)} s' for model, w in workers['samples'].items())
              + '), so the phases of different models overlap in time and add up to more than '
              'the wall clock.', '']
    else:
      out += [f'Where this invocation\'s time went (wall-clock s, {devices.get("count", "?")} '
              f'{devices.get("platform", "")} device(s); work reused from earlier runs costs '
              'nothing here):', '']
    compiling = results.get('compile_s', {})
    out += _table(['phase', 's', 'of which XLA compiling'],
                  [[name, _f(seconds, 0), _f(compiling[name], 0) if name in compiling else '']
                   for name, seconds in results['phases_s'].items()])
    out += ['', 'Of each model\'s last phase (s): '
            + '; '.join(f'{model}: scores {_f(res["scores_s"], 0)}, ' + ', '.join(
                f'{part} {_f(seconds, 0)}' for part, seconds in res['analysis_parts_s'].items())
                        for model, res in models.items() if 'analysis_parts_s' in res) + '.', '']

  out += [HEADINGS[11], '',
          'Draws from each final model, every prior\'s standard deviation scaled by the '
          'temperature T (affine Glow samples best below T = 1).', '']
  for model, res in models.items():
    for path in res.get('samples', []):
      out += [f'{eval_plan.MODEL_TITLES[model]}, {os.path.basename(path)}:', '',
              _img(path, workdir, f'{model} samples'), '']
  return '\n'.join(out)
