"""Shaping uint8 images to a spec: crop, pad or resize; grey <-> RGB; flips.

All functions take and return uint8 [N, H, W, C] and never change bit depth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Centre crop applied before resizing, per data set (square side in pixels).
# CelebA's 218 x 178 faces: 140 x 140 is the usual crop in flow papers.
SOURCE_CROP = {'celeb_a': 140}

# A source at most this many pixels a side smaller than the target is zero
# padded (MNIST-style 28 -> 32) rather than resized.
MAX_PAD_PER_SIDE = 4

# ITU-R BT.601 luma weights for R, G, B.
LUMA_601 = np.array([0.299, 0.587, 0.114])


def centre_crop(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """The central height x width window (no-op in a dimension already small enough)."""
  _, h, w, _ = images.shape
  top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
  return images[:, top:top + min(h, height), left:left + min(w, width)]


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
  """Zero pads to size x size, the image centred (extra pixel, if odd, below/right)."""
  _, h, w, _ = images.shape
  top, left = (size - h) // 2, (size - w) // 2
  return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes each image to size x size: area averaging down, bilinear up."""
  _, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  method = (Image.Resampling.BOX if size < min(h, w) else Image.Resampling.BILINEAR)
  out = np.empty((len(images), size, size, c), np.uint8)
  for i, image in enumerate(images):
    # PIL wants 2-D arrays for grey images.
    pil = Image.fromarray(image[..., 0] if c == 1 else image)
    out[i] = np.asarray(pil.resize((size, size), method)).reshape(size, size, c)
  return out


def fit_to_size(images: np.ndarray, size: int, crop: int | None = None) -> np.ndarray:
  """Square size x size images.

  Optional centre crop first; then: same size -> unchanged; at most
  MAX_PAD_PER_SIDE px a side smaller -> zero pad; else centre-crop to a square
  and resize.
  """
  if crop is not None:
    images = centre_crop(images, crop, crop)
  _, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  if h <= size and w <= size and size - min(h, w) <= 2 * MAX_PAD_PER_SIDE:
    return pad_to(images, size)
  side = min(h, w)
  return resize(centre_crop(images, side, side), size)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Grey -> RGB by repeating; RGB -> grey by BT.601 luma rounded to nearest."""
  c = images.shape[-1]
  if c == channels:
    return images
  if c == 1 and channels == 3:
    return np.repeat(images, 3, axis=-1)
  if c == 3 and channels == 1:
    luma = images.astype(np.float64) @ LUMA_601
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
  raise ValueError(f'Cannot convert {c} channels to {channels}.')


def describe(shape: tuple[int, ...], *, name: str, image_size: int,
             channels: int) -> list[str]:
  """What `preprocess` does to images of `shape` [N, H, W, C], step by step, with the
  shapes before and after; [] when they already fit."""
  _, h, w, c = shape
  steps = []
  crop = SOURCE_CROP.get(name)
  if crop is not None and (h > crop or w > crop):
    steps.append(f'centre-cropped {h}x{w} -> {min(h, crop)}x{min(w, crop)}')
    h, w = min(h, crop), min(w, crop)
  if (h, w) != (image_size, image_size):
    if h <= image_size and w <= image_size and image_size - min(h, w) <= 2 * MAX_PAD_PER_SIDE:
      steps.append(f'zero-padded {h}x{w} -> {image_size}x{image_size}')
    else:
      side = min(h, w)
      if (h, w) != (side, side):
        steps.append(f'centre-cropped {h}x{w} -> {side}x{side}')
      steps.append(f'resized {side}x{side} -> {image_size}x{image_size}')
  if c != channels:
    how = 'grey to RGB, channel repeated' if c == 1 else 'RGB to grey, BT.601 luma'
    steps.append(f'converted {c} -> {channels} channels ({how})')
  return steps


def preprocess(images: np.ndarray, *, name: str, image_size: int,
               channels: int, report: list[str] | None = None) -> np.ndarray:
  """Raw uint8 images of data set `name` -> uint8 [N, image_size, image_size, channels].

  report: if given, `describe`'s steps for these images are appended to it.
  """
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f'Expected uint8 [N, H, W, C] images, got {images.dtype} '
                     f'{images.shape}.')
  if report is not None:
    report.extend(describe(images.shape, name=name, image_size=image_size,
                           channels=channels))
  images = fit_to_size(images, image_size, SOURCE_CROP.get(name))
  return np.ascontiguousarray(to_channels(images, channels))


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Flips each image left-right with probability 1/2 (a copy; input untouched)."""
  flip = rng.random(len(images)) < 0.5
  out = images.copy()
  out[flip] = out[flip, :, ::-1]
  return out
