"""Evaluation: the per-example terms of a model's log-likelihood on any set.

The Evaluator holds the one pixels -> terms function (reduce bits, dequantize,
apply, per-image terms: differentiable in float pixels, the uint8 evaluation built
on it); evaluate_checkpoint runs it on a checkpoint's evaluation sets and writes one
file per set (their layout and settings key: glow_ood.eval_files).
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'orbax.checkpoint')  # before the imports it checks

import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from glow_ood import checkpointing
from glow_ood import data
from glow_ood import eval_files
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood import parallel
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.eval_sets import EvalDataset

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
    self.model = model_kinds.build_model(config, evaluation=True)
    self.n_bits = config.n_bits
    self.image_shape = train_state_lib.image_shape(config)
    self.num_dims = train_state_lib.num_dims(config)
    on_cpu = self.mesh.devices.flat[0].platform == 'cpu'
    # Images per model pass (chunked_apply): the kind's per-device chunk times the devices.
    self.chunk = (model_kinds.kind_of(config.model).cpu_evaluation_chunk * self.mesh.size
                  if on_cpu else 0)
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
    out = chunked_apply(lambda y: self.model.apply(variables, y, method='evaluate',
                                                   rngs=model_rngs).terms(),
                        y, self.chunk)
    out['log_p_discrete'] = likelihood.discrete_log_prob(out['log_px'], self.num_dims,
                                                         self.n_bits)
    out['bits_per_dim'] = likelihood.bits_per_dim(out['log_px'], self.num_dims, self.n_bits)
    return out

  def terms_fn(self, dequantization: str):
    """Jitted (variables, x_uint8 [B,H,W,C], key) -> `terms` of the images, readable on every
    host (parallel.per_example_output)."""
    if dequantization not in self._fns:
      def fn(variables, x_uint8, key):
        return self.terms(variables, x_uint8.astype(jnp.float32), key, dequantization)

      replicated = parallel.replicated(self.mesh)
      self._fns[dequantization] = jax.jit(
          fn, in_shardings=(replicated, parallel.batch_sharding(self.mesh), replicated),
          out_shardings=parallel.per_example_output(self.mesh))
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
    """The evaluation file of one set (glow_ood.eval_files.write, with this model's n_bits
    and dimension count)."""
    eval_files.write(path, results, step, n_bits=self.n_bits, num_dims=self.num_dims,
                     dataset=dataset, split=split, dequantization=dequantization,
                     settings=settings, preprocessing=preprocessing)


def chunked_apply(fn, y: jax.Array, chunk: int) -> dict[str, jax.Array]:
  """fn(y) (a dict of per-image arrays [B, ...]) computed `chunk` images at a time.

  Chunk j holds images j, j + n, j + 2n, ... (n = B / chunk): strided rather than
  contiguous, so that a batch split over devices along its first axis gives every chunk
  an equal share on each device and the loop runs without moving data. The result is put
  back in batch order. Whole batch at once when chunk is 0, B <= chunk or B is not a
  multiple of chunk.
  """
  batch = y.shape[0]
  if not chunk or batch <= chunk or batch % chunk:
    return dict(fn(y))
  num_chunks = batch // chunk
  chunks = jnp.swapaxes(y.reshape((chunk, num_chunks) + y.shape[1:]), 0, 1)
  out = jax.lax.map(lambda c: dict(fn(c)), chunks)
  return {name: jnp.swapaxes(value, 0, 1).reshape((batch,) + value.shape[2:])
          for name, value in out.items()}


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
  """One checkpoint evaluated on several sets (what score_files builds on)."""
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
  Every OOD score as well: glow_ood.score_files.evaluate_and_score (--mode=evaluate).
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
    path = eval_files.eval_path(workdir, eval_set.key, ckpt_step)
    settings = eval_files.eval_settings(config, ckpt_step, dequantization=eval_set.dequantization,
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
    print(eval_files.summary_table(rows), flush=True)
  return CheckpointEvaluation(paths, evaluator, variables, ckpt_step, kept)
