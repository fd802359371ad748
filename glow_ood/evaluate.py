"""Per-example likelihood decomposition of any (data set, split), written to .npz.

workdir/eval/{tag}_{split}_step{step}.npz holds, for N images and L levels:
  log_px [N]          log density of the dequantized y, nats (continuous)
  log_p_discrete [N]  log_px - D*n*log 2: a lower bound on log P(x), nats
  bits_per_dim [N]
  log_pz [N, L]       prior term per level
  logdet_{actnorm,invconv,coupling} [N, L]
and the scalars step, n_bits, num_dims, dataset, split, dequantization and
preprocessing (each resize, pad, crop or channel conversion the images went
through to fit the model, with the shapes before and after; 'none' if none).
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint')  # before the imports it checks

import os

from absl import logging
import jax
import ml_collections
import numpy as np

from glow_ood import atomic_files
from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood import data
from glow_ood import likelihood
from glow_ood import parallel
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.flows.glow import Glow, LOGDET_KINDS

PER_EXAMPLE_KEYS = ('log_px', 'log_p_discrete', 'bits_per_dim', 'log_pz') + tuple(
    f'logdet_{kind}' for kind in LOGDET_KINDS)

_EVAL_FNS = {}


def _eval_fn(config: ml_collections.ConfigDict, mesh, dequantization: str):
  """Jitted (variables, x_uint8 [B,H,W,C], key) -> per-example terms, replicated to every host."""
  cache_key = (config.to_json(), mesh, dequantization)
  if cache_key in _EVAL_FNS:
    return _EVAL_FNS[cache_key]
  model = train_state_lib.model_from_config(config)
  n_bits = config.n_bits

  def fn(variables, x_uint8, key):
    y = likelihood.dequantize(key, likelihood.reduce_bits(x_uint8, n_bits), n_bits,
                              noise=dequantization)
    out = model.apply(variables, y, method=Glow.forward)
    terms = {'log_px': out.log_px, 'log_pz': out.log_pz}
    terms.update({f'logdet_{kind}': out.logdet[kind] for kind in LOGDET_KINDS})
    return terms

  replicated = parallel.replicated(mesh)
  jitted = jax.jit(fn, in_shardings=(replicated, parallel.batch_sharding(mesh), replicated),
                   out_shardings=replicated)
  _EVAL_FNS[cache_key] = jitted
  return jitted


def evaluate_images(config: ml_collections.ConfigDict, mesh, variables, images: np.ndarray, *,
                    batch_size: int, dequantization: str, key: jax.Array) -> dict[str, np.ndarray]:
  """Per-example terms for uint8 images [N,H,W,C] (every host passes the same images).

  The last batch is zero-padded to batch_size and the padding dropped. Uniform
  dequantization noise for batch i comes from fold_in(key, i).
  """
  images = np.asarray(images)
  expected = train_state_lib.image_shape(config)
  if images.dtype != np.uint8 or images.shape[1:] != expected:
    raise ValueError(f'Expected uint8 images of shape [N, {expected}], got {images.dtype} '
                     f'{images.shape}.')
  num = images.shape[0]
  if num == 0:
    raise ValueError('No images to evaluate.')
  fn = _eval_fn(config, mesh, dequantization)
  num_batches = -(-num // batch_size)
  padded = np.zeros((num_batches * batch_size,) + images.shape[1:], np.uint8)
  padded[:num] = images
  chunks = []
  for index in range(num_batches):
    batch = padded[index * batch_size:(index + 1) * batch_size]
    x = parallel.global_batch(mesh, parallel.host_slice(batch))
    chunks.append(fn(variables, x, jax.random.fold_in(key, index)))
  chunks = parallel.to_host(chunks)
  results = {name: np.concatenate([c[name] for c in chunks])[:num] for name in chunks[0]}
  num_dims = int(np.prod(expected))
  results['log_p_discrete'] = np.asarray(
      likelihood.discrete_log_prob(results['log_px'], num_dims, config.n_bits))
  results['bits_per_dim'] = np.asarray(
      likelihood.bits_per_dim(results['log_px'], num_dims, config.n_bits))
  return results


def eval_path(workdir: str, tag: str, split: str, step: int) -> str:
  return os.path.join(workdir, 'eval', f'{tag}_{split}_step{step}.npz')


def write_npz_atomic(path: str, arrays: dict) -> None:
  """Writes to a temporary file in the same directory, then renames it into place."""
  with atomic_files.atomic_write(path, 'wb') as f:
    np.savez(f, **arrays)


def write_evaluation(path: str, results: dict[str, np.ndarray], config: ml_collections.ConfigDict,
                     step: int, *, dataset: str, split: str, dequantization: str,
                     preprocessing: str = 'none') -> None:
  """The per-example file of one evaluated set (process 0 writes; atomic).

  preprocessing: what was done to the images to fit the model ('none' if nothing).
  """
  if not parallel.is_main_process():
    return
  write_npz_atomic(path, dict(
      {name: results[name] for name in PER_EXAMPLE_KEYS},
      step=np.int64(step), n_bits=np.int64(config.n_bits),
      num_dims=np.int64(train_state_lib.num_dims(config)), dataset=np.str_(dataset),
      split=np.str_(split), dequantization=np.str_(dequantization),
      preprocessing=np.str_(preprocessing)))


def summary_table(rows: dict[str, dict[str, np.ndarray]]) -> str:
  """Means per data set: bits/dim, log p(x), log p(z) and log-det per kind (nats/image)."""
  columns = ['N', 'bits/dim', 'log p(x)', 'log p(z)'] + [f'logdet {k}' for k in LOGDET_KINDS]
  width = max([len(name) for name in rows] + [12])
  lines = [f'{"data set":<{width}}' + ''.join(f'{c:>16}' for c in columns)]
  for name, res in rows.items():
    values = [len(res['log_px']), res['bits_per_dim'].mean(), res['log_px'].mean(),
              res['log_pz'].sum(-1).mean()]
    values += [res[f'logdet_{k}'].sum(-1).mean() for k in LOGDET_KINDS]
    cells = [f'{values[0]:>16d}'] + [f'{v:>16.4f}' for v in values[1:]]
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


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        datasets: str | list[str] | None = None,
                        step: int | None = None, *, with_scores: bool = False) -> dict[str, str]:
  """Evaluates one checkpoint on every eval data set; returns {'{tag}_{split}': npz path}.

  datasets: entries as in config.eval.datasets (default: that field).
  step: checkpoint step (default: config.eval.checkpoint_step, -1 = latest).
  with_scores: also write every OOD score per image (glow_ood.scoring) when
  config.scores.enabled, as --mode=evaluate does.
  """
  config_validation.validate_config(config, device_count=jax.device_count())
  eval_sets = config_validation.parse_eval_datasets(config, datasets)
  mesh = parallel.make_mesh()
  for eval_set in eval_sets:
    if eval_set.batch_size % jax.device_count():
      raise config_validation.ConfigError(
          f'config.eval.batch_size={eval_set.batch_size} is not valid: must be divisible by '
          f'the number of devices ({jax.device_count()}) (data set {eval_set.key}).')
  variables, ckpt_step = load_state_for_eval(config, workdir, mesh, step)
  key = train_state_lib.run_keys(config.seed)['eval']

  paths, rows, evaluated = {}, {}, {}
  for eval_set in eval_sets:
    spec = data.DataSpec(**config_validation.data_fields_for(config, eval_set))
    data.validate_spec(spec)
    report = []
    images = data.load_array(spec, eval_set.split, max_examples=eval_set.max_examples or None,
                             report=report)
    # Distinct steps in order: TFDS sets with varying sizes report per image.
    preprocessing = '; '.join(dict.fromkeys(report)) or 'none'
    if report and parallel.is_main_process():
      print(f'{eval_set.key}: images fitted to the model: {preprocessing}', flush=True)
    results = evaluate_images(config, mesh, variables, images, batch_size=eval_set.batch_size,
                              dequantization=eval_set.dequantization, key=key)
    path = eval_path(workdir, eval_set.tag, eval_set.split, ckpt_step)
    write_evaluation(path, results, config, ckpt_step, dataset=eval_set.name,
                     split=eval_set.split, dequantization=eval_set.dequantization,
                     preprocessing=preprocessing)
    paths[eval_set.key] = path
    rows[eval_set.key] = results
    if with_scores and config.scores.enabled:
      evaluated[eval_set.key] = (path, images, results)
    logging.info('Evaluated %s: %d images -> %s', eval_set.key, len(images), path)

  if parallel.is_main_process():
    print(f'Checkpoint step {ckpt_step} ({workdir}); means per image, log terms in nats:')
    print(summary_table(rows), flush=True)
  if evaluated:
    from glow_ood import scoring  # pylint: disable=g-import-not-at-top (it imports this module)
    scoring.score_evaluated_sets(config, workdir, mesh, variables, ckpt_step, evaluated)
  return paths
