"""Shifted copies of an in-distribution test set, and synthetic image sets.

Every function takes and returns uint8 images [N, H, W, C] (grey C=1 or RGB
C=3, values 0..255) and returns a new array of the input's shape. Arithmetic
is done in float64, rounded half to even (np.rint) and clipped to [0, 255].

Orientation: row 0 is the top of an image and column 0 its left, as images are
displayed. "Right" and "down" move content toward larger column and row
indices, and a 90 degree rotation is counter-clockwise as displayed (np.rot90
on the H, W axes).

`stress_suite` builds a named set of these; each random entry draws from its
own stream seeded by (seed, name), so an entry's images do not depend on which
other names were asked for.
"""

from __future__ import annotations

import functools
import zlib
from typing import Callable, Sequence

import numpy as np

FillValue = int | str


def check_images(images: np.ndarray) -> np.ndarray:
  """`images` as an array; ValueError unless it is uint8 [N, H, W, C]."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f'expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}')
  return images


def to_uint8(values: np.ndarray) -> np.ndarray:
  """Float grey levels rounded half to even and clipped to uint8 0..255."""
  return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
  """`rng` itself if a Generator, else np.random.default_rng(rng)."""
  return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def suite_seed(seed: np.random.Generator | int) -> int:
  """An integer seed; a Generator gives one draw, so a suite's streams stay named ones."""
  return int(seed.integers(2**63)) if isinstance(seed, np.random.Generator) else seed


def entry_rng(name: str, seed: int) -> np.random.Generator:
  """The stream of entry `name`: np.random.default_rng([crc32(name), seed]), fixed by both alone."""
  return np.random.default_rng([zlib.crc32(name.encode()), seed])


# -----------------------------------------------------------------------------
# Geometric transforms: exact permutations of the pixels, no rounding.


def rotate90(images: np.ndarray, turns: int = 1) -> np.ndarray:
  """Rotate by turns * 90 degrees counter-clockwise; odd turns need square images."""
  images = check_images(images)
  if turns % 2 and images.shape[1] != images.shape[2]:
    raise ValueError(f'a 90 degree rotation of {images.shape[1]}x{images.shape[2]} images changes their shape')
  return np.ascontiguousarray(np.rot90(images, turns, axes=(1, 2)))


def flip_horizontal(images: np.ndarray) -> np.ndarray:
  """Mirror left to right (reverse the column order)."""
  return np.ascontiguousarray(check_images(images)[:, :, ::-1])


def flip_vertical(images: np.ndarray) -> np.ndarray:
  """Mirror top to bottom (reverse the row order)."""
  return np.ascontiguousarray(check_images(images)[:, ::-1])


def shift(images: np.ndarray, pixels: int, fill: FillValue = 0) -> np.ndarray:
  """Move content right and down by `pixels`; vacated rows and columns get `fill`.

  `fill` is a grey level in 0..255 (0 is the MNIST and FashionMNIST
  background) or 'edge', which repeats each image's first row and column.
  """
  images = check_images(images)
  if pixels < 0:
    raise ValueError(f'pixels must be non-negative, got {pixels}')
  height, width = images.shape[1:3]
  padding = ((0, 0), (pixels, 0), (pixels, 0), (0, 0))
  if fill == 'edge':
    padded = np.pad(images, padding, mode='edge')
  elif isinstance(fill, (int, np.integer)) and 0 <= fill <= 255:
    padded = np.pad(images, padding, mode='constant', constant_values=fill)
  else:
    raise ValueError(f"fill must be a level in 0..255 or 'edge', got {fill!r}")
  return np.ascontiguousarray(padded[:, :height, :width])


# -----------------------------------------------------------------------------
# Photometric transforms.


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
  """mean + factor * (x - mean), the mean taken per image and channel."""
  x = check_images(images).astype(np.float64)
  mean = x.mean(axis=(1, 2), keepdims=True)
  return to_uint8(mean + factor * (x - mean))


def brightness(images: np.ndarray, offset: float) -> np.ndarray:
  """Add `offset` grey levels to every pixel."""
  return to_uint8(check_images(images).astype(np.float64) + offset)


def invert(images: np.ndarray) -> np.ndarray:
  """255 - x."""
  return 255 - check_images(images)


def gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator | int | None) -> np.ndarray:
  """Add independent N(0, sigma^2) noise per pixel, sigma in grey levels."""
  x = check_images(images).astype(np.float64)
  if sigma < 0:
    raise ValueError(f'sigma must be non-negative, got {sigma}')
  return to_uint8(x + as_generator(rng).normal(0.0, sigma, size=x.shape))


# -----------------------------------------------------------------------------
# Synthetic sets.


def uniform_noise_images(shape: Sequence[int], rng: np.random.Generator | int | None) -> np.ndarray:
  """Images of `shape` (N, H, W, C) whose pixels are independent and uniform on 0..255."""
  return as_generator(rng).integers(0, 256, size=tuple(shape), dtype=np.uint8)


def constant_images(
    shape: Sequence[int],
    rng: np.random.Generator | int | None = None,
    levels: Sequence[int] | None = None,
) -> np.ndarray:
  """Images of `shape` (N, H, W, C), each one grey level in every pixel and channel.

  Without `levels` each image's level is uniform on 0..255 (drawn from `rng`).
  With `levels` image i gets levels[i % len(levels)], so the given levels are
  used equally often (up to one image) and no randomness is involved.
  """
  num_images = shape[0]
  if levels is None:
    image_levels = as_generator(rng).integers(0, 256, size=num_images)
  else:
    levels = np.asarray(levels)
    if levels.size == 0 or np.any((levels < 0) | (levels > 255)) or np.any(levels != np.round(levels)):
      raise ValueError(f'levels must be a non-empty sequence of integers in 0..255, got {levels}')
    image_levels = levels[np.arange(num_images) % levels.size]
  out = np.empty(tuple(shape), dtype=np.uint8)
  out[...] = image_levels.astype(np.uint8).reshape(-1, 1, 1, 1)
  return out


# -----------------------------------------------------------------------------
# Registry. Each entry maps (images, rng) to a set of the images' shape.

StressTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _deterministic(transform: Callable[[np.ndarray], np.ndarray]) -> StressTransform:
  return lambda images, rng: transform(images)


STRESS_TRANSFORMS: dict[str, StressTransform] = {
    'rotate90': _deterministic(rotate90),
    'rotate180': _deterministic(functools.partial(rotate90, turns=2)),
    'flip_horizontal': _deterministic(flip_horizontal),
    'flip_vertical': _deterministic(flip_vertical),
    'shift1': _deterministic(functools.partial(shift, pixels=1)),
    'shift2': _deterministic(functools.partial(shift, pixels=2)),
    'shift4': _deterministic(functools.partial(shift, pixels=4)),
    'contrast0.5': _deterministic(functools.partial(contrast, factor=0.5)),
    'contrast2': _deterministic(functools.partial(contrast, factor=2.0)),
    'brightness-64': _deterministic(functools.partial(brightness, offset=-64)),
    'brightness+64': _deterministic(functools.partial(brightness, offset=64)),
    'invert': _deterministic(invert),
    'noise4': lambda images, rng: gaussian_noise(images, 4.0, rng),
    'noise16': lambda images, rng: gaussian_noise(images, 16.0, rng),
    'noise64': lambda images, rng: gaussian_noise(images, 64.0, rng),
    'uniform_noise': lambda images, rng: uniform_noise_images(images.shape, rng),
    'constant': lambda images, rng: constant_images(images.shape, rng),
}

DESCRIPTIONS: dict[str, str] = {
    'rotate90': 'rotated 90° counter-clockwise',
    'rotate180': 'rotated 180°',
    'flip_horizontal': 'mirrored left to right',
    'flip_vertical': 'mirrored top to bottom',
    'shift1': 'shifted 1 pixel right and down, background 0',
    'shift2': 'shifted 2 pixels right and down, background 0',
    'shift4': 'shifted 4 pixels right and down, background 0',
    'contrast0.5': "contrast halved around each image's channel mean",
    'contrast2': "contrast doubled around each image's channel mean, clipped",
    'brightness-64': '64 grey levels darker, clipped at 0',
    'brightness+64': '64 grey levels brighter, clipped at 255',
    'invert': 'inverted (255 - x)',
    'noise4': 'Gaussian noise, σ = 4 grey levels',
    'noise16': 'Gaussian noise, σ = 16 grey levels',
    'noise64': 'Gaussian noise, σ = 64 grey levels, clipped',
    'uniform_noise': 'synthetic: every pixel uniform on 0..255',
    'constant': 'synthetic: each image one grey level, uniform on 0..255',
}


def stress_suite(
    images: np.ndarray,
    seed: np.random.Generator | int = 0,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """Name -> shifted or synthetic set with the shape of `images`, for `names` (default all).

  Randomness: a Generator `seed` gives one integer draw that replaces it. The
  random entries then draw from np.random.default_rng([crc32(name), seed]), a
  stream fixed by the seed and the name alone.
  """
  images = check_images(images)
  names = list(STRESS_TRANSFORMS) if names is None else list(names)
  unknown = [name for name in names if name not in STRESS_TRANSFORMS]
  if unknown:
    raise ValueError(f'unknown stress sets {unknown}; known: {sorted(STRESS_TRANSFORMS)}')
  seed = suite_seed(seed)
  return {name: STRESS_TRANSFORMS[name](images, entry_rng(name, seed)) for name in names}
