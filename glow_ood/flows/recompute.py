"""Invertible recomputation: the gradient of a chain of flow steps from its output alone.

Every flow step is invertible, so the backward pass need not keep any step's
activations: walking the chain backwards, each step's input is rebuilt from its
output through the inverse, and the step's forward is differentiated there. Only
the chain's output is kept, so activation memory no longer grows with the number
of steps (the reversible-network trick; openai/glow calls it memory-saving
gradients). The price is an inverse and a forward per step in the backward pass.

The steps share one structure and their variables are stacked on a leading axis
(as `nn.scan` stores them), so both passes are a `lax.scan` over that axis.

Unlike `jax.checkpoint`, the compiler cannot undo this: the rebuilt inputs exist
only inside the backward pass, so the saving holds on every backend.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

# (one step's variables, x) -> (y, {kind: log-det [B]}); the inverse maps y back to x.
StepForward = Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
StepInverse = Callable[[Any, jax.Array], jax.Array]


def _run_chain(forward: StepForward, stacked_variables, x, unroll):
  y, terms = jax.lax.scan(lambda x, variables: forward(variables, x), x, stacked_variables,
                          unroll=unroll)
  return y, jax.tree.map(lambda t: jnp.sum(t, axis=0), terms)


def invertible_chain(forward: StepForward, inverse: StepInverse, stacked_variables,
                     x: jax.Array, unroll: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Applies the K steps in order; returns (output, log-dets summed over steps per kind).

  `forward` and `inverse` are pure functions of one step's variables;
  `stacked_variables` holds the K steps' variables on a leading axis, first
  step first. The gradient reaches `stacked_variables` and `x` as if the chain
  ran plainly, up to the float error of reconstructing each input through the
  inverse. `unroll` steps run per loop iteration, in both passes.
  """

  @jax.custom_vjp
  def chain(stacked_variables, x):
    return _run_chain(forward, stacked_variables, x, unroll)

  def chain_fwd(stacked_variables, x):
    y, totals = _run_chain(forward, stacked_variables, x, unroll)
    return (y, totals), (stacked_variables, y)

  def chain_bwd(residuals, cotangents):
    stacked_variables, y = residuals
    g_y, g_totals = cotangents

    def step_back(carry, variables):
      y, g_y = carry
      x = inverse(variables, y)
      # Every step adds its log-dets to the totals, so each sees the totals' cotangent.
      _, step_vjp = jax.vjp(forward, variables, x)
      g_variables, g_x = step_vjp((g_y, g_totals))
      # Tie the next rebuild to this step's gradient, or a compiler that unrolls the
      # loop can run every inverse first and keep each step's activations alive.
      # XLA's CPU pipeline drops optimization barriers, so the tie is a data
      # dependency that adds zero.
      x = x + 0.0 * g_x[(0,) * g_x.ndim]
      return (x, g_x), g_variables

    (_, g_x), g_stacked = jax.lax.scan(step_back, (y, g_y), stacked_variables, reverse=True,
                                       unroll=unroll)
    return g_stacked, g_x

  chain.defvjp(chain_fwd, chain_bwd)
  return chain(stacked_variables, x)
