"""Projected gradient attacks on the input image of a density model.

    result = pgd_attack(objective_fn, x_uint8, epsilon=2, num_steps=20, step_size=None, key=key)

The engine maximises objective_fn(x [B, H, W, C] float pixels in [0, 255], key) -> [B]
per image, inside an L-infinity ball of `epsilon` 8-bit levels around each image and
inside the valid pixel range:

- Step rule: signed-gradient ascent, projected after every step (L-infinity PGD,
  Madry et al. 2018). The step size decays linearly from `step_size` (default
  4 * epsilon / num_steps) to nearly zero, so the iterate travels about 2 * epsilon in
  all and settles near an interior optimum instead of oscillating around it.
- Dequantization: the gradient of each step is the mean over `noise_draws` draws of
  the objective (fresh keys every step), an estimate of the gradient of the expectation
  over the noise.
- Rounding: the iterate is continuous, but every iterate is rounded to integers and
  scored by objective_fn with one fixed `select_key`; the best rounded image so far is
  kept per image (the original, step 0, included). So the returned image is a real
  8-bit image and its objective under select_key is never below the original's. That
  is a selection, not a measurement: report the returned images under a noise key
  independent of select_key (glow_ood.experiment.attack_section does), or the reported
  effect is the maximum over the noisy draws the selection tried.

Model statistics: glow_ood.evaluate.Evaluator.terms(variables, x, key) is the
differentiable map from float pixels to the per-image terms of the evaluation files
(the same function the evaluation runs), so an objective (or an OOD score,
`score_fn(stats) -> [B]`, higher = more OOD) is a function of that dict. The objectives
below take the model's variables as their first argument, so they travel as traced
arrays rather than constants folded into the compiled attack.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from glow_ood import parallel

PIXEL_MAX = 255.0


@dataclasses.dataclass
class AttackResult:
  images: np.ndarray            # uint8 [B, H, W, C], the best rounded iterate per image
  objective_before: np.ndarray  # [B] objective of the original under select_key
  objective_after: np.ndarray   # [B] objective of `images` under select_key (>= before)
  trace: np.ndarray             # [num_steps + 1, B] objective of each rounded iterate
  best_trace: np.ndarray        # [num_steps + 1, B] best objective so far
  best_step: np.ndarray         # [B] step of the returned image (0 = unchanged)
  # First-order promise of the gradient at the original: sum_i |g_i| * room_i, every pixel
  # moved to the end of its allowed range in the gradient's direction (objective units),
  # and the share of it from pixels at 0 or 255 (which can move only one way).
  first_order_gain: np.ndarray  # [B]
  edge_share: np.ndarray        # [B]


def default_step_size(epsilon, num_steps: int):
  """First step 4 * epsilon / T; with the linear decay the path is about 2 * epsilon long."""
  return 4.0 * jnp.asarray(epsilon, jnp.float32) / num_steps


def _per_image(value, batch: int) -> jax.Array:
  """A scalar or [B] value as [B, 1, 1, 1], to broadcast against images."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))[:, None, None, None]


_STATIC = ('objective_fn', 'num_steps', 'noise_draws')


def _pgd_impl(objective_fn, x_uint8, epsilon, step_size, key, select_key, objective_args, *,
         num_steps: int, noise_draws: int):
  x0 = x_uint8.astype(jnp.float32)
  batch = x0.shape[0]
  eps = _per_image(epsilon, batch)
  # Integer bounds, so that rounding an iterate never leaves the ball.
  low = jnp.maximum(jnp.ceil(x0 - eps - 1e-4), 0.0)
  high = jnp.minimum(jnp.floor(x0 + eps + 1e-4), PIXEL_MAX)
  first_step = _per_image(step_size, batch)
  at_range_edge = (x0 <= 0.0) | (x0 >= PIXEL_MAX)

  def expected_objective(x, step_key):
    keys = jax.random.split(step_key, noise_draws)
    values = jax.vmap(lambda k: objective_fn(x, k, *objective_args))(keys)
    return values.mean(0)

  # Images are independent, so the gradient of the sum is each image's own gradient.
  grad_fn = jax.grad(lambda x, k: expected_objective(x, k).sum())

  def judge(x):
    return objective_fn(jnp.round(x), select_key, *objective_args)

  def step(carry, inputs):
    x, best_x, best_value = carry
    index, step_key = inputs
    grad = grad_fn(x, step_key)
    # What the gradient promises to first order: every pixel moved to the end of its
    # allowed range in the gradient's direction (reported for the first step).
    room = jnp.where(grad > 0, high - x, x - low)
    gain = jnp.abs(grad) * room
    promise = gain.sum(axis=(1, 2, 3))
    edge_share = jnp.where(at_range_edge, gain, 0.0).sum(axis=(1, 2, 3)) / jnp.maximum(
        promise, 1e-30)
    size = first_step * (1.0 - index / num_steps)
    x = jnp.clip(x + size * jnp.sign(grad), low, high)
    value = judge(x)
    better = value > best_value
    best_x = jnp.where(better[:, None, None, None], jnp.round(x), best_x)
    best_value = jnp.where(better, value, best_value)
    return (x, best_x, best_value), (value, best_value, better, promise, edge_share)

  value0 = judge(x0)
  steps = jnp.arange(num_steps, dtype=jnp.float32)
  (_, best_x, best_value), (values, bests, improved, promise, edge_share) = jax.lax.scan(
      step, (x0, x0, value0), (steps, jax.random.split(key, num_steps)))
  trace = jnp.concatenate([value0[None], values])
  best_trace = jnp.concatenate([value0[None], bests])
  # The last step that improved the best is the step the returned image comes from.
  step_ids = jnp.arange(1, num_steps + 1)[:, None]
  best_step = jnp.max(jnp.where(improved, step_ids, 0), axis=0)
  return (best_x.astype(jnp.uint8), value0, best_value, trace, best_trace, best_step,
          promise[0], edge_share[0])


_pgd = jax.jit(_pgd_impl, static_argnames=_STATIC)


@functools.lru_cache(maxsize=4)
def _pgd_on(mesh) -> Callable:
  """_pgd with its results gathered on every device of mesh (inputs bring their shardings)."""
  return jax.jit(_pgd_impl, static_argnames=_STATIC, out_shardings=parallel.replicated(mesh))


def _place(mesh, x_uint8, epsilon, step_size, key, select_key, objective_args):
  """Per-image arrays split over mesh's batch axis, everything else replicated.

  objective_args: (variables, *args): the variables as they are placed (a train state
  restored on mesh is replicated already); an argument with a leading axis of B is split,
  any other (a scalar sign or target) replicated.
  """
  batch = x_uint8.shape[0]
  split = lambda a: parallel.global_batch(mesh, parallel.host_slice(np.asarray(a)))
  whole = lambda a: jax.device_put(a, parallel.replicated(mesh))
  per_image = lambda a: split(a) if np.shape(a)[:1] == (batch,) else whole(a)
  variables, *rest = objective_args if objective_args else (None,)
  rest = jax.tree.map(per_image, tuple(rest))
  args = ((variables,) + rest) if objective_args else ()
  return (split(x_uint8), per_image(epsilon), per_image(step_size), whole(key),
          whole(select_key), args)


def pgd_attack(objective_fn: Callable[..., jax.Array], x_uint8, *, epsilon, num_steps: int,
               step_size=None, key: jax.Array, noise_draws: int = 1,
               select_key: jax.Array | None = None, objective_args: tuple = (),
               mesh=None) -> AttackResult:
  """Maximises objective_fn per image within an L-infinity ball; see the module docstring.

  objective_fn(x [B,H,W,C] float pixels, key, *objective_args) -> [B]. Pass a function
  object that lives as long as the run (it is a static argument: a new closure per call
  compiles again); put what changes between calls (the model's variables, targets, signs)
  in objective_args: traced arrays (or pytrees of them, e.g. variables), targets and signs
  of shape [] or [B].
  select_key: the fixed noise key that judges every rounded iterate (default: split from
  key); keep it independent of the key the results are reported under.
  epsilon: 8-bit levels, a scalar or one per image [B] (2 = +-2 levels = 2/255).
  step_size: first step in levels, scalar or [B]; default default_step_size.
  mesh: split the images over its devices (data parallel, as the Evaluator does); the
  first objective argument is then taken to be placed already (the model's variables,
  replicated), the others are split by their leading axis. The noise does not depend
  on the split (threefry keys are partitionable), so neither do the results, to round-off.
  """
  x_uint8 = jnp.asarray(x_uint8)
  if x_uint8.dtype != jnp.uint8 or x_uint8.ndim != 4:
    raise ValueError(f'Expected uint8 images [B, H, W, C], got {x_uint8.dtype} {x_uint8.shape}.')
  if num_steps < 1 or noise_draws < 1:
    raise ValueError(f'num_steps and noise_draws must be >= 1, got {num_steps}, {noise_draws}.')
  if np.any(np.asarray(epsilon) < 0):
    raise ValueError(f'epsilon must be >= 0 (8-bit levels), got {epsilon}.')
  if step_size is None:
    step_size = default_step_size(epsilon, num_steps)
  if select_key is None:
    key, select_key = jax.random.split(key)
  inputs = (x_uint8, jnp.asarray(epsilon, jnp.float32), jnp.asarray(step_size, jnp.float32),
            key, select_key, tuple(objective_args))
  if mesh is not None and mesh.size > 1:
    outputs = _pgd_on(mesh)(objective_fn, *_place(mesh, *inputs), num_steps=num_steps,
                            noise_draws=noise_draws)
  else:
    outputs = _pgd(objective_fn, *inputs, num_steps=num_steps, noise_draws=noise_draws)
  images, before, after, trace, best_trace, best_step, promise, edge = jax.device_get(outputs)
  return AttackResult(images=np.asarray(images), objective_before=np.asarray(before),
                      objective_after=np.asarray(after), trace=np.asarray(trace),
                      best_trace=np.asarray(best_trace), best_step=np.asarray(best_step),
                      first_order_gain=np.asarray(promise), edge_share=np.asarray(edge))


# Objectives over a statistics function stats_fn(variables, x, key) -> dict of per-image
# terms (Evaluator.terms, or one that adds other models' terms). Each returns
# objective_fn(x, key, variables, *args) for pgd_attack (objective_args=(variables, *args));
# build each once per model and reuse it.

def signed_log_density_objective(stats_fn: Callable) -> Callable:
  """args (variables, sign): sign * log p(x) per image; +1 raises the likelihood, -1 lowers it."""
  def objective(x, key, variables, sign):
    return sign * stats_fn(variables, x, key)['log_p_discrete']
  return objective


def bits_per_dim_target_objective(stats_fn: Callable) -> Callable:
  """args (variables, target): -|bits/dim - target|, pulling each image's bits/dim onto target."""
  def objective(x, key, variables, target):
    return -jnp.abs(stats_fn(variables, x, key)['bits_per_dim'] - target)
  return objective


def evasion_objective(stats_fn: Callable, score_fn: Callable[[dict], jax.Array]) -> Callable:
  """args (variables, sign): sign * score; -1 makes OOD images look in-distribution, +1 the
  reverse.

  score_fn(stats) -> [B], higher = more OOD. stats is stats_fn's dict, which may carry
  extra keys (e.g. another model's log_px) if stats_fn adds them.
  """
  def objective(x, key, variables, sign):
    return sign * score_fn(stats_fn(variables, x, key))
  return objective


def combined_objective(stats_fn: Callable, score_fns: dict[str, Callable]) -> Callable:
  """Every objective above in one function, chosen per image, so one compilation serves all.

  args (variables, choice [B, 2 + len(score_fns)] one-hot, sign [B], target [B], fixed); the
  columns are sign * log p(x), -|bits/dim - target|, then sign * score for each score in
  order. fixed: a dict of per-image terms [B] merged into the statistics and held constant
  (terms with no gradient, e.g. a compressor's code length of the original image); may be
  empty.
  """
  score_list = list(score_fns.values())

  def objective(x, key, variables, choice, sign, target, fixed):
    stats = {**stats_fn(variables, x, key), **fixed}
    terms = [sign * stats['log_p_discrete'], -jnp.abs(stats['bits_per_dim'] - target)]
    terms += [sign * fn(stats) for fn in score_list]
    return jnp.sum(choice * jnp.stack(terms, axis=-1), axis=-1)
  return objective
