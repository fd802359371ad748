"""Evaluation files: what one holds, the settings that key it, and how it is written.

workdir/eval/<key>_step<step>.npz holds, for N images, every per-example term
the model kind reports (glow_ood.model_kinds), e.g. for Glow with L levels:
  log_px [N]          log density of the dequantized y, nats (continuous)
  log_pz [N, L]       prior term per level
  logdet_{actnorm,invconv,coupling} [N, L]
and for every kind
  log_p_discrete [N]  log_px - D*n*log 2: log P(x) of the n-bit image, nats (exact
                      for PixelCNN++, a lower bound for Glow and the VAE)
  bits_per_dim [N]
with the scalars step, n_bits, num_dims, dataset, split, dequantization and
preprocessing (each resize, pad, crop or channel conversion the images went
through to fit the model, with the shapes before and after; 'none' if none),
for a set read from a data set subset_seed and subset_indices [N] (which rows
of the split, in evaluation order: a seeded shuffle, glow_ood.data.load_subset),
and `settings`: everything that changes the numbers (eval_settings). A file is
reused only under the same settings; one written under others is kept aside.
"""

import hashlib
import json
import os

import ml_collections
import numpy as np

from glow_ood import atomic_files
from glow_ood import parallel
from glow_ood.eval_sets import EvalDataset

# Written beside the model's own terms in every evaluation file.
DERIVED_KEYS = ('log_p_discrete', 'bits_per_dim')
# Arrays of an evaluation file that are not per-image statistics of the model: what was
# evaluated and how (subset_indices [N]: the images' rows in their split).
METADATA_KEYS = ('step', 'n_bits', 'num_dims', 'dataset', 'split', 'dequantization',
                 'preprocessing', 'subset_indices', 'subset_seed', 'settings')



def write(path: str, results: dict[str, np.ndarray], step: int, *, n_bits: int, num_dims: int,
          dataset: str, split: str, dequantization: str, settings: dict,
          preprocessing: str = 'none') -> None:
  """The per-example file of one evaluated set (process 0 writes; atomic).

  settings (eval_settings) are stored in it; a file already at `path` that was
  written under other settings is renamed aside first (keep_aside), never overwritten.
  """
  if not parallel.is_main_process():
    return
  keep_aside(path, settings)
  write_npz_atomic(path, dict(
      results, step=np.int64(step), n_bits=np.int64(n_bits),
      num_dims=np.int64(num_dims), dataset=np.str_(dataset), split=np.str_(split),
      dequantization=np.str_(dequantization), preprocessing=np.str_(preprocessing),
      settings=np.str_(settings_text(settings))))


def eval_settings(config: ml_collections.ConfigDict, step: int, *, dequantization: str,
                  batch_size: int, eval_set: EvalDataset | None = None,
                  images: np.ndarray | None = None) -> dict:
  """Everything that changes an evaluation file's numbers, as plain values.

  The checkpoint step and which weights (EMA or raw), the noise (dequantization,
  the batch layout its keys follow, the run seed), n_bits and a hash of the model
  and data shape; for a data set its source, split and subset (size and seed); for
  images made in memory (stress sets) a hash of their bytes.
  """
  model = json.dumps({'model': config.model.to_dict(), 'n_bits': config.n_bits,
                      'image': [config.data.image_size, config.data.channels]},
                     sort_keys=True, default=str)
  settings = {
      'step': int(step),
      'weights': 'ema' if config.train.ema_decay > 0 and config.eval.use_ema else 'raw',
      'dequantization': dequantization, 'batch_size': int(batch_size),
      'n_bits': int(config.n_bits), 'seed': int(config.seed),
      'model_sha1': hashlib.sha1(model.encode()).hexdigest()[:16],
  }
  if eval_set is not None:
    settings.update(data={k: getattr(eval_set.data, k) for k in ('name', 'source', 'path',
                                                                 'data_dir')},
                    split=eval_set.split, max_examples=int(eval_set.max_examples),
                    subset_seed=int(eval_set.subset_seed))
  if images is not None:
    settings['images_sha1'] = hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()
  return settings


def settings_text(settings: dict) -> str:
  return json.dumps(settings, sort_keys=True, default=str)


def stored_settings(path: str) -> dict | None:
  """The settings an evaluation file was written under (None: no file, or an older file)."""
  if not os.path.exists(path):
    return None
  with np.load(path) as f:
    return json.loads(str(f['settings'])) if 'settings' in f.files else None


def reusable(path: str, settings: dict) -> bool:
  """An evaluation file exists at `path` and was written under exactly these settings."""
  stored = stored_settings(path)
  return stored is not None and settings_text(stored) == settings_text(settings)


def keep_aside(path: str, settings: dict) -> str | None:
  """Renames a file at `path` written under other settings to <path>.<their hash>.npz.

  Returns the new path (None when nothing was moved). A file without settings (an
  older version's) is kept as <path>.unkeyed.npz.
  """
  if not os.path.exists(path):
    return None
  stored = stored_settings(path)
  if stored is not None and settings_text(stored) == settings_text(settings):
    return None
  tag = ('unkeyed' if stored is None else
         hashlib.sha1(settings_text(stored).encode()).hexdigest()[:10])
  aside = f'{path[:-len(".npz")]}.{tag}.npz'
  os.replace(path, aside)
  print(f'{path} was written under other settings: kept as {aside}', flush=True)
  return aside


def eval_path(workdir: str, key: str, step: int) -> str:
  return os.path.join(workdir, 'eval', f'{key}_step{step}.npz')


def write_npz_atomic(path: str, arrays: dict) -> None:
  """Writes to a temporary file in the same directory, then renames it into place."""
  with atomic_files.atomic_write(path, 'wb') as f:
    np.savez(f, **arrays)


def summary_table(rows: dict[str, dict[str, np.ndarray]]) -> str:
  """Means per data set of bits/dim and every log term (nats per image, summed over levels)."""
  first = next(iter(rows.values()))
  names = ['log_px'] + [k for k in first
                       if k not in ('log_px', 'bits_per_dim') + DERIVED_KEYS + METADATA_KEYS]
  columns = ['N', 'bits/dim'] + names
  width = max([len(name) for name in rows] + [12])
  lines = [f'{"data set":<{width}}' + ''.join(f'{c:>16}' for c in columns)]
  for name, res in rows.items():
    values = [res['bits_per_dim'].mean()]
    values += [res[k].reshape(len(res[k]), -1).sum(-1).mean() for k in names]
    cells = [f'{len(res["log_px"]):>16d}'] + [f'{v:>16.4f}' for v in values]
    lines.append(f'{name:<{width}}' + ''.join(cells))
  return '\n'.join(lines)
