"""The optimizer a training config names: schedule, clipping, and L2 on the gradient."""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'optax')  # before the imports it checks

import jax
import ml_collections
import optax


def learning_rate_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the peak rate, then constant."""
  peak = train_cfg.learning_rate
  if train_cfg.warmup_steps <= 0:
    return optax.constant_schedule(peak)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, train_cfg.warmup_steps),
       optax.constant_schedule(peak)],
      boundaries=[train_cfg.warmup_steps])


def add_l2_gradient(grads, params, weight_decay: float):
  """grads + weight_decay * params: the gradient of a loss penalty weight_decay/2 |params|^2.

  Done on the gradient, not as an optimizer transform, so the optimizer state (and so a
  checkpoint's layout) is the same with and without it. Only the trainable collection is
  decayed; the LU 1x1 conv's permutation and signs live in 'constants', out of its reach.
  """
  if weight_decay <= 0:
    return grads
  return jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(train_cfg)
  optimizers = {'adam': optax.adam, 'adamax': optax.adamax, 'rmsprop': optax.rmsprop}
  if train_cfg.optimizer not in optimizers:
    raise ValueError(f'config.train.optimizer={train_cfg.optimizer!r} is not valid: '
                     f'choose one of {", ".join(optimizers)}.')
  transforms = []
  if train_cfg.grad_clip_norm > 0:
    transforms.append(optax.clip_by_global_norm(train_cfg.grad_clip_norm))
  transforms.append(optimizers[train_cfg.optimizer](schedule))
  return optax.chain(*transforms)
