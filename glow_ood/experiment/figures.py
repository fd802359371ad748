"""The report's PNG figures (matplotlib, Agg backend). Each function writes one file."""

from __future__ import annotations

import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from glow_ood import atomic_files

_DPI = 110


def _save(fig, path: str) -> str:
  fig.tight_layout()
  save_atomic(fig, path)
  plt.close(fig)
  return path


def save_atomic(fig, path: str) -> None:
  """fig.savefig(path) through a temporary file renamed into place: never half a PNG."""
  with atomic_files.atomic_write(path, 'wb') as f:
    fig.savefig(f, dpi=_DPI, format=os.path.splitext(path)[1].lstrip('.') or 'png')


def _hist(ax, series: dict[str, np.ndarray], bins: int, xlabel: str):
  values = np.concatenate([np.ravel(v) for v in series.values()])
  values = values[np.isfinite(values)]
  low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
  if high <= low:  # a constant term (CV-Glow's log-det): a narrow window around it
    low, high = low - 1.0, high + 1.0
  edges = np.linspace(low, high, bins + 1)
  for label, v in series.items():
    ax.hist(np.clip(np.ravel(v), low, high), bins=edges, density=True, alpha=0.5, label=label)
  ax.locator_params(axis='x', nbins=6)  # readable ticks even around a constant term
  ax.set_xlabel(xlabel)
  ax.set_ylabel('density')
  ax.legend(fontsize=8)


def log_px_histogram(path: str, series: dict[str, np.ndarray], title: str, bins: int) -> str:
  """Figure 2: log p(x) per data set (discrete bound, nats per image)."""
  fig, ax = plt.subplots(figsize=(6, 3.6))
  _hist(ax, series, bins, 'log p(x)  [nats / image]')
  ax.set_title(title)
  return _save(fig, path)


def decomposition_histograms(path: str, log_pz: dict[str, np.ndarray],
                             logdet: dict[str, np.ndarray], title: str, bins: int) -> str:
  """Figure 4: the two terms of log p(x) = log p(z) + log|det dz/dx| separately."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  _hist(axes[0], log_pz, bins, 'log p(z)  [nats, summed over levels]')
  _hist(axes[1], logdet, bins, 'log |det dz/dx|  [nats, all layers]')
  axes[0].set_title(f'{title}: log p(z)')
  axes[1].set_title(f'{title}: log-det')
  return _save(fig, path)


def training_curves(path: str, steps: list[int], curves: dict[str, list[float]],
                    title: str) -> str:
  """Figure 5: mean bits/dim per data set at every kept checkpoint."""
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for label, values in curves.items():
    ax.plot(steps, values, marker='o', label=label)
  ax.set_xlabel('training step')
  ax.set_ylabel('bits/dim (lower = more likely)')
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def channel_stat_histograms(path: str, means: dict[str, np.ndarray],
                            variances: dict[str, np.ndarray], bins: int) -> str:
  """Figure 6: per-image, per-channel mean and variance of the pixels ([N, C] per set)."""
  channels = next(iter(means.values())).shape[1]
  names = ['grey'] if channels == 1 else ['red', 'green', 'blue'][:channels]
  fig, axes = plt.subplots(channels, 2, figsize=(10, 3.2 * channels), squeeze=False)
  for c in range(channels):
    _hist(axes[c, 0], {k: v[:, c] for k, v in means.items()}, bins,
          f'per-image mean, {names[c]} channel (pixels in [0, 1))')
    _hist(axes[c, 1], {k: v[:, c] for k, v in variances.items()}, bins,
          f'per-image variance, {names[c]} channel')
  return _save(fig, path)


def graying_curves(path: str, curves_by_target: dict[str, dict[str, dict]], title: str) -> str:
  """Mean log p(x) as images are blended toward each target (one panel each), ± standard error."""
  fig, axes = plt.subplots(1, len(curves_by_target), figsize=(6 * len(curves_by_target), 3.8),
                           squeeze=False)
  for ax, (target, curves) in zip(axes[0], curves_by_target.items()):
    for label, curve in curves.items():
      ax.errorbar(curve['alpha'], curve['mean_log_prob'], yerr=curve['stderr'], marker='o',
                  capsize=3, label=label)
    ax.set_xlabel('alpha in (1 - alpha) x + alpha * target')
    ax.set_ylabel('mean log p(x)  [nats / image]')
    ax.set_title(f'{title}\n{target}', fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  return _save(fig, path)


def second_order_bars(path: str, rows: dict[str, tuple[float, float]], title: str) -> str:
  """Measured E_q - E_p* beside each prediction; error bars are standard errors (0 if exact)."""
  labels = list(rows)
  values = [rows[k][0] for k in labels]
  errors = [rows[k][1] for k in labels]
  fig, ax = plt.subplots(figsize=(7, 3.6))
  ax.barh(range(len(labels)), values, xerr=errors, color=['C3'] + ['C0'] * (len(labels) - 1),
          capsize=3)
  ax.set_yticks(range(len(labels)), labels, fontsize=8)
  ax.axvline(0.0, color='k', lw=0.8)
  ax.set_xlabel('E_q[log p(x)] - E_p*[log p(x)]  [nats / image]')
  ax.set_title(title)
  ax.invert_yaxis()
  return _save(fig, path)


def score_histograms(path: str, per_score: dict[str, dict[str, np.ndarray]], title: str,
                     bins: int) -> str:
  """One panel per OOD score: its per-image values on each set (higher = more OOD)."""
  num = len(per_score)
  cols = min(num, 2)
  rows = -(-num // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
  for ax, (name, series) in zip(axes.ravel(), per_score.items()):
    _hist(ax, series, bins, name)
    ax.set_title(name, fontsize=9)
  for ax in axes.ravel()[num:]:
    ax.axis('off')
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)
