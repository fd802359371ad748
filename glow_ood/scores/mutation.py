"""The input perturbation a likelihood-ratio background model trains on (Ren et al. 2019).

Each pixel value (each channel of each pixel, independently) is replaced, with
probability `rate`, by a value drawn uniformly from 0..255. Trained on such
images, a model keeps the data's generic local statistics but loses its
semantic content, so log p(x) - log p_background(x) cancels the former.
"""

import jax
import jax.numpy as jnp


def mutate_pixels(key: jax.Array, x_uint8: jax.Array, rate: float | jax.Array) -> jax.Array:
  """uint8 [..., H, W, C] -> the same with a `rate` fraction of values made uniform.

  `rate` may be traced (the train step takes it as an argument); a number is checked.
  """
  if x_uint8.dtype != jnp.uint8:
    raise TypeError(f'mutate_pixels expects uint8 images, got dtype {x_uint8.dtype}.')
  if isinstance(rate, (int, float)) and not 0.0 <= rate <= 1.0:
    raise ValueError(f'The mutation rate must be in [0, 1], got {rate}.')
  replace_key, value_key = jax.random.split(key)
  replace = jax.random.bernoulli(replace_key, rate, x_uint8.shape)
  values = jax.random.randint(value_key, x_uint8.shape, 0, 256, dtype=jnp.int32)
  return jnp.where(replace, values.astype(jnp.uint8), x_uint8)
