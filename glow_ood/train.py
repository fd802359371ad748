"""Training: the jitted step over the device mesh and the loop around it.

Resumes from the newest checkpoint in workdir by itself: step count, params,
optimizer state and data position (the per-step rng is fold_in(key, step)),
so a resumed run repeats the uninterrupted one.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'optax', 'orbax.checkpoint', 'clu.metric_writers')  # before the imports it checks

import itertools
import math

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import periodic_actions

from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood import data
from glow_ood import eval_sets
from glow_ood import evaluate
from glow_ood import host_memory
from glow_ood import interrupt
from glow_ood import likelihood
from glow_ood import metrics as metrics_lib
from glow_ood import model_kinds
from glow_ood import optimizer as optimizer_lib
from glow_ood import parallel
from glow_ood import sample
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.scores.mutation import mutate_pixels
from glow_ood.train_state import TrainState


def step_metrics(terms: dict, loss, grad_norm, learning_rate) -> dict:
  """Batch means of every per-example term, nats per image.

  A [B] term gives one metric; a [B, L] term (per level) gives its sum over
  levels under its own name and each level's under 'level<l>/<name>'.
  """
  metrics = {'bits_per_dim': loss, 'grad_norm': grad_norm, 'learning_rate': learning_rate}
  for name, value in terms.items():
    if value.ndim == 1:
      metrics[name] = value.mean()
      continue
    metrics[name] = value.sum(-1).mean()
    for level in range(value.shape[-1]):
      metrics[f'level{level}/{name}'] = value[:, level].mean()
  return metrics


class TrainStep:
  """step(state, x_uint8 [B,H,W,C], key) -> (state, metrics): the jitted step, state donated.

  The mutation rate of a background model's training data is an argument of the
  program, not a constant in it, so the candidates of a rate search (and the chosen
  one's continuation) run one compiled program: on the quick pair each new rate cost
  a 12-15 s compile. `lower` lowers the program as it is called.
  """

  def __init__(self, jitted, mutation_rate: float):
    self._jitted = jitted
    self._rate = np.float32(mutation_rate)

  def __call__(self, state: TrainState, x_uint8: jax.Array, key: jax.Array):
    return self._jitted(state, x_uint8, key, self._rate)

  def lower(self, state: TrainState, x_uint8: jax.Array, key: jax.Array):
    return self._jitted.lower(state, x_uint8, key, self._rate)


def make_train_step(config: ml_collections.ConfigDict, mesh) -> TrainStep:
  """The trainer's step for `config` over `mesh` (see TrainStep).

  The loss is the batch mean of bits/dim of the model's training objective
  (for Glow and PixelCNN++ the exact log density; for the VAE its ELBO).
  """
  model = model_kinds.build_model(config)
  optimizer = optimizer_lib.make_optimizer(config.train)
  schedule = optimizer_lib.learning_rate_schedule(config.train)
  n_bits = config.n_bits
  num_dims = train_state_lib.num_dims(config)
  ema_decay = config.train.ema_decay
  mutates = config.train.mutation_rate > 0  # a likelihood-ratio background model's data
  weight_decay = config.train.weight_decay

  def gradient(params, constants, y, model_rngs):
    """((batch mean of bits/dim, per-image terms), its gradient in params)."""
    def loss_fn(params):
      out = model.apply(train_state_lib.model_variables(params, constants), y,
                        train=True, rngs=model_rngs)
      terms = out.terms()
      return likelihood.bits_per_dim(terms['log_px'], num_dims, n_bits).mean(), terms
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  kind = model_kinds.kind_of(config.model)
  if mesh.size > 1 and kind.per_device_gradient({**kind.defaults(), **dict(config.model)}):
    gradient = parallel.per_device_gradient(gradient, mesh)

  def train_step(state: TrainState, x_uint8: jax.Array, base_key: jax.Array,
                 mutation_rate: jax.Array):
    noise_key = jax.random.fold_in(base_key, state.step)
    if mutates:
      x_uint8 = mutate_pixels(jax.random.fold_in(noise_key, 1), x_uint8, mutation_rate)
    y = likelihood.dequantize_uint8(noise_key, x_uint8, n_bits)
    model_rngs = model_kinds.rngs(jax.random.fold_in(noise_key, 2))
    (loss, terms), grads = gradient(state.params, state.constants, y, model_rngs)
    grads = optimizer_lib.add_l2_gradient(grads, state.params, weight_decay)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
      ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_params)
    metrics = step_metrics(terms, loss, optax.tree.norm(grads), schedule(state.step))
    return new_state, metrics

  replicated = parallel.replicated(mesh)
  jitted = jax.jit(train_step,
                   in_shardings=(replicated, parallel.batch_sharding(mesh), replicated,
                                 replicated),
                   out_shardings=(replicated, replicated),
                   donate_argnums=(0,))
  return TrainStep(jitted, config.train.mutation_rate)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss, gradient or parameter."""


def _raise_non_finite(step: int, what: str, value, manager) -> None:
  checkpointing.wait(manager)
  latest = manager.latest_step()
  kept = (f'The last good checkpoint (step {latest}) in {manager.directory} is intact.'
          if latest is not None else 'No checkpoint had been written yet.')
  raise NonFiniteLossError(
      f'Non-finite {what} ({value}) at training step {step} (the update from checkpoint '
      f'step {step} to {step + 1}). {kept} Try a lower '
      'train.learning_rate, a longer train.warmup_steps, or a smaller train.grad_clip_norm.')


def _check_finite(step: int, host_metrics: dict, manager) -> None:
  for name in ('bits_per_dim', 'grad_norm'):
    value = float(host_metrics[name])
    if not math.isfinite(value):
      _raise_non_finite(step, 'loss' if name == 'bits_per_dim' else 'gradient norm', value,
                        manager)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       check_config: bool = True,
                       evaluator: evaluate.Evaluator | None = None) -> TrainState:
  """Trains (or resumes) to config.train.num_steps; returns the final state.

  check_config=False skips the config check for a caller that has made it already
  (the pair experiment checks every model's config once, before any training).
  evaluator: the periodic evaluation's (built for this config when None); a caller that
  evaluates the model afterwards passes its own, so the forward pass compiles once.
  """
  if check_config:
    config_validation.validate_config(config, device_count=jax.device_count())
  if evaluator is not None and not same_model(evaluator.config, config):
    raise ValueError('train_and_evaluate: the evaluator passed was built for another model '
                     '(model, n_bits or image shape differ from the config trained).')
  mesh = parallel.make_mesh()
  train_cfg = config.train
  spec = data.DataSpec(**dict(config.data))
  workdir_config.check_resume(config, workdir)
  if parallel.is_main_process():
    workdir_config.prepare(workdir)

  keys = train_state_lib.run_keys(config.seed)
  manager = checkpointing.make_manager(workdir, keep=train_cfg.keep_checkpoints)
  writer = None
  try:
    state = None
    start_step = 0
    if manager.latest_step() is not None:
      state, meta = checkpointing.restore(
          manager, train_state_lib.abstract_train_state(config, mesh))
      start_step = int(jax.device_get(state.step))
      logging.info('Resumed from checkpoint step %d (%s)', start_step, meta)

    fitted = []   # what the training images went through to fit the model
    batches = data.train_iterator(
        spec, 'train', batch_size=train_cfg.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(), report=fitted)
    if state is None:
      # ActNorm is initialised from the global first batch, which is also step 0's batch.
      first = next(batches)
      batches = itertools.chain([first], batches)
      state = train_state_lib.create_train_state(
          config, mesh, keys['init'], parallel.global_batch(mesh, first))
    if parallel.is_main_process():
      workdir_config.record(config, workdir)
      workdir_config.record_training_data(workdir, spec, 'train', fitted)

    writer = metrics_lib.make_writer(workdir)
    if start_step == 0:
      writer.write_hparams(metrics_lib.flatten_config(config))
    with interrupt.StopRequest() as stop:
      state, done = _train_loop(config, workdir, mesh, state, start_step, batches, keys, manager,
                                writer, stop, evaluator)
      if stop.requested:
        checkpointing.wait(manager)
        _save(manager, state, done)
        checkpointing.wait(manager)
        raise interrupt.TrainingInterrupted(
            f'Interrupted: stopped after step {done} and saved checkpoint step {done} in '
            f'{manager.directory}. Rerun the same command to resume from there.')
  finally:
    # Async saves must be complete (and renamed into place) before the process exits;
    # a failed one surfaces here as a CheckpointWriteError.
    checkpointing.close(manager)
    if writer is not None:
      writer.close()
  return state


def same_model(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> bool:
  """Whether two configs describe the same model on the same images (what an Evaluator
  depends on: the model block, n_bits, the image shape and the evaluation's settings)."""
  def key(c):
    return (c.model.to_dict(), c.n_bits, train_state_lib.image_shape(c),
            c.eval.to_dict())
  return key(a) == key(b)


def _save(manager, state: TrainState, done: int, train_bits_per_dim: float | None = None) -> None:
  if manager.latest_step() == done:
    return
  checkpointing.save(manager, state, {'data_position': done,
                                      'train_bits_per_dim': train_bits_per_dim})


class _PeriodicEvaluation:
  """The train loop's test bits/dim and sample grids, with their evaluator built once
  (or the caller's)."""

  def __init__(self, config, workdir, mesh, keys, evaluator: evaluate.Evaluator | None = None):
    self.config, self.workdir, self.keys = config, workdir, keys
    self.evaluator = evaluate.Evaluator(config, mesh) if evaluator is None else evaluator
    self.sampler = sample.Sampler(config, mesh)
    spec = data.DataSpec(**dict(config.data, augment='none'))
    self.test_set = eval_sets.EvalDataset(
        key='periodic_test', data=spec, split='test',
        max_examples=config.train.eval_examples, subset_seed=config.eval.subset_seed,
        batch_size=config.eval.batch_size, dequantization=config.eval.dequantization)
    self.test_images = None

  def __call__(self, state: TrainState, done: int, writer) -> None:
    if self.test_images is None:
      self.test_images = data.load_array(self.test_set.data, 'test',
                                         max_examples=self.test_set.max_examples or None,
                                         subset_seed=self.test_set.subset_seed)
    variables = train_state_lib.eval_variables(state, self.config)
    results = self.evaluator(variables, self.test_images, key=self.keys['eval'])
    test_bpd = float(results['bits_per_dim'].mean())
    writer.write_scalars(done, {'test/bits_per_dim': test_bpd})
    logging.info('step %d: test bits/dim %.4f', done, test_bpd)
    if parallel.is_main_process():
      print(f'step {done}: test bits/dim {test_bpd:.4f} '
            f'({len(self.test_images)} {self.test_set.name} test images)', flush=True)
    grids = self.sampler.grids(variables, jax.random.fold_in(self.keys['sample'], done))
    writer.write_images(done, {f'samples/T{t}': g[None] for t, g in grids.items()})
    if parallel.is_main_process():
      for temperature, grid in grids.items():
        sample.save_png(grid, sample.sample_path(self.workdir, done, temperature))


def _host_metrics(step: int, device_metrics, manager) -> dict[str, float]:
  """A step's metrics on the host, checked finite (a non-finite loss stops the run)."""
  host = metrics_lib.flatten_metrics(parallel.to_host(device_metrics))
  _check_finite(step, host, manager)
  return host


def _train_loop(config, workdir, mesh, state, start_step, batches, keys, manager, writer,
                stop, evaluator=None) -> tuple[TrainState, int]:
  """Steps from start_step to train.num_steps (or to a stop request); returns (state, steps done).

  Each step's metrics come to the host once: at a log or checkpoint step right
  away, otherwise one step later, so that the check overlaps the next step's compute.
  """
  train_cfg = config.train
  train_step = make_train_step(config, mesh)
  progress = metrics_lib.ProgressLine(train_cfg.num_steps, train_cfg.batch_size)
  report = periodic_actions.ReportProgress(num_train_steps=train_cfg.num_steps, writer=writer,
                                           every_steps=train_cfg.log_every)
  periodic_eval = (_PeriodicEvaluation(config, workdir, mesh, keys, evaluator)
                   if train_cfg.eval_every else None)
  # One trace of profile_steps steps, 10 steps into this run (compiled and warm by then).
  profile = (periodic_actions.Profile(logdir=workdir, num_profile_steps=train_cfg.profile_steps,
                                      profile_duration_ms=None, first_profile=start_step + 10,
                                      every_steps=None, every_secs=None)
             if train_cfg.profile_steps else None)
  pending = None  # (step, device metrics) not yet brought to the host
  done = start_step
  for step in range(start_step, train_cfg.num_steps):
    if stop.requested:
      break
    state, step_out = train_step(state, parallel.global_batch(mesh, next(batches)), keys['train'])
    if pending is not None:
      _host_metrics(*pending, manager)
      pending = None
      if step == start_step + 1:  # the first step has run: its heap is the working set
        host_memory.back_heap_with_huge_pages()
    done = step + 1
    report(done)  # steps/s and time per phase to TensorBoard, every log_every steps
    if profile:
      profile(done)
    is_last = done == train_cfg.num_steps
    log_now = done % train_cfg.log_every == 0 or is_last
    save_now = done % train_cfg.checkpoint_every == 0 or is_last
    if not (log_now or save_now):
      pending = (step, step_out)
      continue

    host = _host_metrics(step, step_out, manager)
    host_memory.back_heap_with_huge_pages()  # only what the heap grew by since the last call
    if log_now:
      progress.update(done, bits_per_dim=host['bits_per_dim'])
      writer.write_scalars(done, {f'train/{name}': value for name, value in host.items()})
    if save_now:
      with report.timed('checkpoint', wait_jax_async_dispatch=False):
        if not bool(_all_finite(state.params)):
          _raise_non_finite(step, 'parameters', 'after the update', manager)
        _save(manager, state, done, host['bits_per_dim'])
    if periodic_eval and (done % train_cfg.eval_every == 0 or is_last):
      with report.timed('evaluate'):
        periodic_eval(state, done, writer)
    writer.flush()
  if pending is not None:
    _host_metrics(*pending, manager)
    if stop.requested and not bool(_all_finite(state.params)):
      _raise_non_finite(pending[0], 'parameters', 'after the update', manager)
  if profile is not None:
    _end_trace()  # the run ended before the trace had its steps
  return state, done


def _end_trace() -> None:
  try:
    jax.profiler.stop_trace()
  except RuntimeError:  # no trace running: it had ended on schedule, or never began
    pass
