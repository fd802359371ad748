"""The attack figure: original, perturbation, attacked image and the objective over steps."""

from __future__ import annotations

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from glow_ood.experiment import figures


def _show(ax, image: np.ndarray, title: str):
  """uint8 [H, W, C] as grey or RGB."""
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=255)
  else:
    ax.imshow(image)
  ax.set_title(title, fontsize=8)
  ax.axis('off')


def attack_panels(path: str, groups: dict[str, dict], epsilon: float, title: str) -> str:
  """One row per attacked image, grouped by attack (e.g. raise on test, lower on OOD).

  groups: name -> {'original', 'attacked': uint8 [k, H, W, C], 'bits_per_dim_trace':
  [steps + 1, k], 'label', 'objective'}. The perturbation is shown in levels on a
  diverging scale fixed at +-epsilon (grey channels averaged for RGB), so its
  amplification is readable from the colour bar.
  """
  rows = [(g, i) for g in groups.values() for i in range(len(g['original']))]
  fig, axes = plt.subplots(max(len(rows), 1), 4, figsize=(10, 2.2 * max(len(rows), 1)),
                           squeeze=False)
  scale = max(float(epsilon), 1.0)
  for r, (group, i) in enumerate(rows):
    original = group['original'][i]
    attacked = group['attacked'][i]
    delta = attacked.astype(np.float64) - original.astype(np.float64)
    _show(axes[r, 0], original, f'{group["label"]}: original')
    im = axes[r, 1].imshow(delta.mean(-1), cmap='seismic', vmin=-scale, vmax=scale)
    axes[r, 1].set_title(f'change ×{255 / scale:.0f} (levels)', fontsize=8)
    axes[r, 1].axis('off')
    fig.colorbar(im, ax=axes[r, 1], fraction=0.046, pad=0.04)
    _show(axes[r, 2], attacked, f'{group["objective"]} log p(x)')
    trace = group['bits_per_dim_trace'][:, i]
    axes[r, 3].plot(np.arange(len(trace)), trace, marker='.')
    axes[r, 3].set_xlabel('step', fontsize=8)
    axes[r, 3].set_ylabel('bits/dim', fontsize=8)
    axes[r, 3].tick_params(labelsize=7)
    axes[r, 3].grid(alpha=0.3)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  figures.save_atomic(fig, path)
  plt.close(fig)
  return path
