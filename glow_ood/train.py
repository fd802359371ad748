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
import optax

from glow_ood import checkpointing
from glow_ood import config_validation
from glow_ood import data
from glow_ood import evaluate
from glow_ood import interrupt
from glow_ood import likelihood
from glow_ood import metrics as metrics_lib
from glow_ood import parallel
from glow_ood import sample
from glow_ood import train_state as train_state_lib
from glow_ood import workdir_config
from glow_ood.flows.glow import Glow, LOGDET_KINDS
from glow_ood.scores.mutation import mutate_pixels
from glow_ood.train_state import TrainState


def step_metrics(out, loss, grad_norm, learning_rate) -> dict:
  """Batch means of every term, nats per image, summed over levels and per level."""
  metrics = {'bits_per_dim': loss, 'grad_norm': grad_norm, 'learning_rate': learning_rate,
             'log_px': out.log_px.mean(), 'log_pz': out.log_pz.sum(-1).mean()}
  num_levels = out.log_pz.shape[-1]
  for kind in LOGDET_KINDS:
    metrics[f'logdet/{kind}'] = out.logdet[kind].sum(-1).mean()
  for level in range(num_levels):
    metrics[f'level{level}/log_pz'] = out.log_pz[:, level].mean()
    for kind in LOGDET_KINDS:
      metrics[f'level{level}/logdet_{kind}'] = out.logdet[kind][:, level].mean()
  return metrics


def make_train_step(config: ml_collections.ConfigDict, mesh):
  """Returns step(state, x_uint8 [B,H,W,C], key) -> (state, metrics); state is donated."""
  model = train_state_lib.model_from_config(config)
  optimizer = train_state_lib.make_optimizer(config.train)
  schedule = train_state_lib.learning_rate_schedule(config.train)
  n_bits = config.n_bits
  num_dims = train_state_lib.num_dims(config)
  ema_decay = config.train.ema_decay
  mutation_rate = config.train.get('mutation_rate', 0.0)
  weight_decay = config.train.get('weight_decay', 0.0)

  def train_step(state: TrainState, x_uint8: jax.Array, base_key: jax.Array):
    noise_key = jax.random.fold_in(base_key, state.step)
    if mutation_rate > 0:  # a likelihood-ratio background model's training data
      x_uint8 = mutate_pixels(jax.random.fold_in(noise_key, 1), x_uint8, mutation_rate)
    y = likelihood.dequantize(noise_key, likelihood.reduce_bits(x_uint8, n_bits), n_bits)

    def loss_fn(params):
      out = model.apply(train_state_lib.model_variables(params, state.constants), y,
                        method=Glow.forward)
      return likelihood.bits_per_dim(out.log_px, num_dims, n_bits).mean(), out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = train_state_lib.add_l2_gradient(grads, state.params, weight_decay)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
      ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_params)
    metrics = step_metrics(out, loss, optax.tree.norm(grads), schedule(state.step))
    return new_state, metrics

  replicated = parallel.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(replicated, parallel.batch_sharding(mesh), replicated),
                 out_shardings=(replicated, replicated),
                 donate_argnums=(0,))


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) to config.train.num_steps; returns the final state."""
  eval_sets = config_validation.validate_config(config, device_count=jax.device_count())
  del eval_sets  # the evaluate mode uses them; training evaluates the training set's test split
  mesh = parallel.make_mesh()
  train_cfg = config.train
  spec = data.DataSpec.from_config(config.data)
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

    batches = data.train_iterator(
        spec, 'train', batch_size=train_cfg.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())
    if state is None:
      # ActNorm is initialised from the global first batch, which is also step 0's batch.
      first = next(batches)
      batches = itertools.chain([first], batches)
      state = train_state_lib.create_train_state(
          config, mesh, keys['init'], parallel.global_batch(mesh, first))
    if parallel.is_main_process():
      workdir_config.record(config, workdir)

    writer = metrics_lib.make_writer(workdir)
    if start_step == 0:
      writer.write_hparams(metrics_lib.flatten_config(config))
    with interrupt.StopRequest() as stop:
      state, done = _train_loop(config, workdir, mesh, state, start_step, batches, keys, manager,
                                writer, stop)
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


def _save(manager, state: TrainState, done: int, train_bits_per_dim: float | None = None) -> None:
  if manager.latest_step() == done:
    return
  checkpointing.save(manager, state, {'data_position': done,
                                      'train_bits_per_dim': train_bits_per_dim})


def _train_loop(config, workdir, mesh, state, start_step, batches, keys, manager, writer,
                stop) -> tuple[TrainState, int]:
  """Steps from start_step to train.num_steps (or to a stop request); returns (state, steps done)."""
  train_cfg = config.train
  spec = data.DataSpec.from_config(config.data)
  train_step = make_train_step(config, mesh)
  progress = metrics_lib.ProgressLine(train_cfg.num_steps, train_cfg.batch_size)
  test_images = None
  pending = None  # (step, metrics) of the step whose result is not yet checked
  done = start_step
  for step in range(start_step, train_cfg.num_steps):
    if stop.requested:
      break
    state, step_out = train_step(state, parallel.global_batch(mesh, next(batches)), keys['train'])
    # Checking the previous step lets this one run while we wait for that result.
    if pending is not None:
      _check_finite(pending[0], parallel.to_host(pending[1]), manager)
    pending = (step, step_out)
    done = step + 1
    is_last = done == train_cfg.num_steps

    if done % train_cfg.log_every == 0 or is_last:
      host = metrics_lib.flatten_metrics(parallel.to_host(step_out))
      _check_finite(step, host, manager)
      rates = progress.update(done, bits_per_dim=host['bits_per_dim'])
      scalars = {f'train/{name}': value for name, value in host.items()}
      scalars.update({f'throughput/{name}': value for name, value in rates.items()})
      writer.write_scalars(done, scalars)

    if done % train_cfg.checkpoint_every == 0 or is_last:
      host = parallel.to_host(step_out)
      _check_finite(step, host, manager)
      if not bool(_all_finite(state.params)):
        _raise_non_finite(step, 'parameters', 'after the update', manager)
      _save(manager, state, done, float(host['bits_per_dim']))

    if train_cfg.eval_every and (done % train_cfg.eval_every == 0 or is_last):
      if test_images is None:
        test_images = data.load_array(spec, 'test',
                                      max_examples=train_cfg.eval_examples or None)
      variables = train_state_lib.eval_variables(state, config)
      results = evaluate.evaluate_images(
          config, mesh, variables, test_images, batch_size=config.eval.batch_size,
          dequantization=config.eval.dequantization, key=keys['eval'])
      test_bpd = float(results['bits_per_dim'].mean())
      writer.write_scalars(done, {'test/bits_per_dim': test_bpd,
                                  'test/log_pz': float(results['log_pz'].sum(-1).mean())})
      logging.info('step %d: test bits/dim %.4f', done, test_bpd)
      if parallel.is_main_process():
        print(f'step {done}: test bits/dim {test_bpd:.4f} '
              f'({len(test_images)} {spec.name} test images)', flush=True)
      grids = sample.sample_grids(config, mesh, variables, jax.random.fold_in(keys['sample'], done))
      writer.write_images(done, {f'samples/T{t}': g[None] for t, g in grids.items()})
      if parallel.is_main_process():
        for temperature, grid in grids.items():
          sample.save_png(grid, sample.sample_path(workdir, done, temperature))
    writer.flush()
  if pending is not None:
    _check_finite(pending[0], parallel.to_host(pending[1]), manager)
    if stop.requested and not bool(_all_finite(state.params)):
      _raise_non_finite(pending[0], 'parameters', 'after the update', manager)
  return state, done
