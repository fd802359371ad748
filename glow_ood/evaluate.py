"""Evaluation: the per-example terms of a model's log-likelihood on any set, written to .npz.

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
and for a set read from a data set subset_seed and subset_indices [N] (which rows
of the split, in evaluation order: a seeded shuffle, glow_ood.data.load_subset).
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint')  # before the imports it checks

import dataclasses
import hashlib
import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from glow_ood import atomic_files
from glow_ood import checkpointing
from glow_ood import data
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood import parallel
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.eval_sets import EvalDataset

# Written beside the model's own terms in every evaluation file.
DERIVED_KEYS = ('log_p_discrete', 'bits_per_dim')
# Arrays of an evaluation file that are not per-image statistics of the model: what was
# evaluated and how (subset_indices [N]: the images' rows in their split).
METADATA_KEYS = ('step', 'n_bits', 'num_dims', 'dataset', 'split', 'dequantization',
                 'preprocessing', 'subset_indices', 'subset_seed', 'settings')


class Evaluator:
  """Per-example log-likelihood terms of images under one config's model, on one mesh.

  `terms` is the one map from pixels to the reported terms (n-bit reduction,
  dequantization, the model's forward pass, log P(x) and bits/dim): float pixels,
  differentiable in them, for gradients (the attacks); the uint8 evaluation
  (`__call__`, `terms_fn`) is `terms` of the images cast to float, so the two agree
  exactly at integer pixels. Build one per model config and pass it around: it
  compiles its uint8 forward pass once per dequantization mode and serves every
  caller (the train loop's periodic evaluation, --mode=evaluate, the pair
  experiment, graying, the OOD scores and the attacks).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    self.config = config
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    self.model = model_kinds.build_model(config)
    self.n_bits = config.n_bits
    self.image_shape = train_state_lib.image_shape(config)
    self.num_dims = train_state_lib.num_dims(config)
    self._fns = {}

  def terms(self, variables, x_pixels: jax.Array, key: jax.Array | None,
            dequantization: str | None = None) -> dict[str, jax.Array]:
    """Every per-image term the evaluation reports, as a jnp function of float pixels.

    x_pixels: [B, H, W, C] on the 0..255 scale (float, or uint8 cast to float);
    key: split into the dequantization noise's key and the model's (a VAE's latent
    samples); None only for midpoint dequantization of a model that draws nothing.
    dequantization defaults to config.eval's. Returns the model's terms (log_px,
    and e.g. log_pz [B, L] and the log-dets per level for Glow) plus log_p_discrete
    and bits_per_dim [B]. Differentiable in x_pixels (the n-bit floor passes its
    gradient straight through, likelihood.reduce_bits_float); not jitted, so it
    composes inside the caller's jit and grad.
    """
    dequantization = dequantization or self.config.eval.dequantization
    noise_key, model_rngs = None, {}
    if key is not None:
      noise_key, model_key = jax.random.split(key)
      model_rngs = model_kinds.rngs(model_key)
    y = likelihood.dequantize_pixels(noise_key, jnp.asarray(x_pixels, jnp.float32),
                                     self.n_bits, noise=dequantization)
    out = dict(self.model.apply(variables, y, method='evaluate', rngs=model_rngs).terms())
    out['log_p_discrete'] = likelihood.discrete_log_prob(out['log_px'], self.num_dims,
                                                         self.n_bits)
    out['bits_per_dim'] = likelihood.bits_per_dim(out['log_px'], self.num_dims, self.n_bits)
    return out

  def terms_fn(self, dequantization: str):
    """Jitted (variables, x_uint8 [B,H,W,C], key) -> `terms` of the images, replicated."""
    if dequantization not in self._fns:
      def fn(variables, x_uint8, key):
        return self.terms(variables, x_uint8.astype(jnp.float32), key, dequantization)

      replicated = parallel.replicated(self.mesh)
      self._fns[dequantization] = jax.jit(
          fn, in_shardings=(replicated, parallel.batch_sharding(self.mesh), replicated),
          out_shardings=replicated)
    return self._fns[dequantization]

  def __call__(self, variables, images: np.ndarray, *, key: jax.Array,
               batch_size: int | None = None,
               dequantization: str | None = None) -> dict[str, np.ndarray]:
    """Per-example terms for uint8 images [N,H,W,C] (every host passes the same images).

    batch_size and dequantization default to config.eval's. The last batch is
    zero-padded to batch_size and the padding dropped. The randomness of batch i
    (dequantization noise, a VAE's latent samples) comes from fold_in(key, i).
    """
    batch_size = batch_size or self.config.eval.batch_size
    dequantization = dequantization or self.config.eval.dequantization
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise ValueError(f'Expected uint8 images of shape [N, {self.image_shape}], got '
                       f'{images.dtype} {images.shape}.')
    num = images.shape[0]
    if num == 0:
      raise ValueError('No images to evaluate.')
    fn = self.terms_fn(dequantization)
    num_batches = -(-num // batch_size)
    padded = np.zeros((num_batches * batch_size,) + images.shape[1:], np.uint8)
    padded[:num] = images
    chunks = []
    for index in range(num_batches):
      batch = padded[index * batch_size:(index + 1) * batch_size]
      x = parallel.global_batch(self.mesh, parallel.host_slice(batch))
      chunks.append(fn(variables, x, jax.random.fold_in(key, index)))
    chunks = parallel.to_host(chunks)
    return {name: np.concatenate([c[name] for c in chunks])[:num] for name in chunks[0]}

  def evaluate_set(self, variables, eval_set: EvalDataset, key: jax.Array):
    """(results, images, preprocessing) of one evaluation set.

    results also holds subset_indices [N]: the images' rows in the split (a seeded
    shuffle over the whole split, glow_ood.data.load_subset) and subset_seed.
    """
    report = []
    images, indices = data.load_subset(eval_set.data, eval_set.split,
                                       max_examples=eval_set.max_examples or None,
                                       seed=eval_set.subset_seed, report=report)
    # Distinct steps in order: TFDS sets with varying sizes report per image.
    preprocessing = '; '.join(dict.fromkeys(report)) or 'none'
    if report and parallel.is_main_process():
      print(f'{eval_set.key}: images fitted to the model: {preprocessing}', flush=True)
    results = self(variables, images, key=key, batch_size=eval_set.batch_size,
                   dequantization=eval_set.dequantization)
    results.update(subset_indices=np.asarray(indices, np.int64),
                   subset_seed=np.int64(eval_set.subset_seed))
    return results, images, preprocessing

  def write(self, path: str, results: dict[str, np.ndarray], step: int, *, dataset: str,
            split: str, dequantization: str, settings: dict,
            preprocessing: str = 'none') -> None:
    """The per-example file of one evaluated set (process 0 writes; atomic).

    settings (eval_settings) are stored in it; a file already at `path` that was
    written under other settings is renamed aside first (keep_aside), never overwritten.
    """
    if not parallel.is_main_process():
      return
    keep_aside(path, settings)
    write_npz_atomic(path, dict(
        results, step=np.int64(step), n_bits=np.int64(self.n_bits),
        num_dims=np.int64(self.num_dims), dataset=np.str_(dataset), split=np.str_(split),
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


def load_state_for_eval(config: ml_collections.ConfigDict, workdir: str, mesh,
                        step: int | None = None):
  """(variables for model.apply, checkpoint step); step None/-1 = config.eval.checkpoint_step."""
  if step is None:
    step = config.eval.checkpoint_step
  workdir_config.check_restore(config, workdir)
  state, meta = checkpointing.restore_from_workdir(
      workdir, train_state_lib.abstract_train_state(config, mesh), step)
  return train_state_lib.eval_variables(state, config), int(meta['step'])


@dataclasses.dataclass
class CheckpointEvaluation:
  """One checkpoint evaluated on several sets (what scoring builds on)."""
  paths: dict[str, str]            # set key -> evaluation npz
  evaluator: 'Evaluator'
  variables: dict                  # the weights evaluated (EMA or raw, as configured)
  step: int
  kept: dict[str, tuple]           # set key -> (npz path, images, results) when kept


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        eval_sets: list[EvalDataset], step: int | None = None, *,
                        evaluator: Evaluator | None = None) -> dict[str, str]:
  """Evaluates one checkpoint on every set; returns {set key: npz path}.

  eval_sets: resolved sets (config_validation.validate_config returns config.evals').
  step: checkpoint step (default: config.eval.checkpoint_step, -1 = latest).
  evaluator: one built for this config, to reuse its compiled function.
  Every OOD score as well: glow_ood.scoring.evaluate_and_score (--mode=evaluate).
  """
  return evaluate_checkpoint_sets(config, workdir, eval_sets, step, evaluator=evaluator).paths


def evaluate_checkpoint_sets(config: ml_collections.ConfigDict, workdir: str,
                             eval_sets: list[EvalDataset], step: int | None = None, *,
                             evaluator: Evaluator | None = None,
                             keep_images: bool = False) -> CheckpointEvaluation:
  """evaluate_checkpoint, also returning the weights, the step and (keep_images) each
  set's images and per-image results."""
  evaluator = evaluator or Evaluator(config)
  variables, ckpt_step = load_state_for_eval(config, workdir, evaluator.mesh, step)
  key = train_state_lib.run_keys(config.seed)['eval']

  paths, rows, kept = {}, {}, {}
  for eval_set in eval_sets:
    results, images, preprocessing = evaluator.evaluate_set(variables, eval_set, key)
    path = eval_path(workdir, eval_set.key, ckpt_step)
    settings = eval_settings(config, ckpt_step, dequantization=eval_set.dequantization,
                             batch_size=eval_set.batch_size, eval_set=eval_set)
    evaluator.write(path, results, ckpt_step, dataset=eval_set.name, split=eval_set.split,
                    dequantization=eval_set.dequantization, settings=settings,
                    preprocessing=preprocessing)
    paths[eval_set.key] = path
    rows[eval_set.key] = results
    if keep_images:
      kept[eval_set.key] = (path, images, results)
    logging.info('Evaluated %s: %d images -> %s', eval_set.key, len(images), path)

  if parallel.is_main_process():
    print(f'Checkpoint step {ckpt_step} ({workdir}); means per image, log terms in nats:')
    print(summary_table(rows), flush=True)
  return CheckpointEvaluation(paths, evaluator, variables, ckpt_step, kept)
