"""The fifteen corruptions of MNIST-C (Mu & Gilmer, 2019), each at severities 1..5.

Conventions are those of `glow_ood.analysis.stress`: uint8 images [N, H, W, C]
(grey C=1 or RGB C=3, values 0..255) in, a new array of the same shape out;
arithmetic in float64, rounded half to even (np.rint) and clipped to [0, 255].
Row 0 is the top of an image and column 0 its left, as displayed; an angle is
counter-clockwise as displayed.

Severity: each corruption has a module-level table of five parameters, one per
severity, ordered so that the mean absolute difference from the original grows
with the severity. Where the draws allow it they do not depend on the severity
(every severity draws the same and uses what its parameters need), so severities
1..5 of one stream are one corruption made stronger: the salt and pepper, blots
and lines of a severity contain those below it, and fog, rotation and shear keep
their pattern and direction.

`corruption_suite` builds {'<name>_s<severity>': images}; every (name, severity)
draws from the stream of `stress.entry_rng(name, seed)`, restarted for each
severity, so an entry's images depend on the seed, the name and the severity
alone, not on which other names or severities were asked for.

MNIST-C fixes one strength for most of these. Severity 5 of stripe and
canny_edges is MNIST-C's; scale and translate take its five steps; the noise
tables and the blur's starting points follow ImageNet-C (Hendrycks & Dietterich,
2019); the rest are chosen here and listed in the tables below.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from glow_ood.analysis import stress
from glow_ood.analysis.stress import as_generator, check_images, to_uint8

Rng = np.random.Generator | int | None
Corruption = Callable[[np.ndarray, int, Rng], np.ndarray]

SEVERITIES = (1, 2, 3, 4, 5)

# -----------------------------------------------------------------------------
# Parameter tables, one entry per severity 1..5.

SHOT_NOISE_PHOTONS = (60, 25, 12, 5, 3)  # expected photon count of a white pixel (ImageNet-C's)
IMPULSE_NOISE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values replaced (ImageNet-C's)
# (sigma, max jump, passes): ImageNet-C's first sigma, fixed (a wider blur smooths the
# jumble away and lowers the distance), and a growing jumble.
GLASS_BLUR = ((0.7, 1, 1), (0.7, 1, 2), (0.7, 1, 3), (0.7, 2, 2), (0.7, 2, 3))
MOTION_BLUR = ((3, 1.0), (4, 1.5), (6, 2.0), (8, 3.0), (10, 4.0))  # (taps after the first, sigma)
SHEAR_FACTOR = (0.2, 0.4, 0.6, 0.8, 1.0)  # columns of slant per row, random sign per image
SCALE_FACTOR = (0.9, 0.8, 0.7, 0.6, 0.5)  # zoom out about the centre (MNIST-C's range)
ROTATE_DEGREES = (10, 20, 30, 45, 60)  # random sign per image
BRIGHTNESS_OFFSET = (25, 50, 75, 100, 125)  # grey levels added (about 0.1 .. 0.5 of the range)
TRANSLATE_PIXELS = (1, 2, 3, 4, 5)  # along each axis, random signs per image (MNIST-C's)
STRIPE_FRACTION = (0.05, 0.10, 0.15, 0.20, 0.25)  # of the width, inverted at each side
FOG_STRENGTH = (0.3, 0.6, 0.9, 1.2, 1.5)  # weight of the fractal haze against the image
SPATTER_THRESHOLD = (2.0, 1.7, 1.4, 1.1, 0.8)  # in standard deviations of the blot field
DOTTED_LINES = (1, 2, 3, 4, 5)  # number of dotted lines drawn
ZIGZAGS = (1, 2, 3, 4, 5)  # number of zigzag lines drawn
CANNY_MIX = (0.2, 0.4, 0.6, 0.8, 1.0)  # weight of the edge map against the image

PARAMETERS: dict[str, tuple] = {
    'shot_noise': SHOT_NOISE_PHOTONS,
    'impulse_noise': IMPULSE_NOISE_AMOUNT,
    'glass_blur': GLASS_BLUR,
    'motion_blur': MOTION_BLUR,
    'shear': SHEAR_FACTOR,
    'scale': SCALE_FACTOR,
    'rotate': ROTATE_DEGREES,
    'brightness': BRIGHTNESS_OFFSET,
    'translate': TRANSLATE_PIXELS,
    'stripe': STRIPE_FRACTION,
    'fog': FOG_STRENGTH,
    'spatter': SPATTER_THRESHOLD,
    'dotted_line': DOTTED_LINES,
    'zigzag': ZIGZAGS,
    'canny_edges': CANNY_MIX,
}

DESCRIPTIONS: dict[str, str] = {
    'shot_noise': 'Poisson (shot) noise, 60 .. 3 photons for white',
    'impulse_noise': 'salt and pepper noise, 3% .. 27% of values set to 0 or 255',
    'glass_blur': 'Gaussian blur, pixels jumbled with neighbours, blurred again',
    'motion_blur': 'one-sided blur along a random direction within 45° of horizontal',
    'shear': 'horizontal shear about the centre, 0.2 .. 1 column per row, background 0',
    'scale': 'shrunk about the centre to 0.9 .. 0.5 of its size, background 0',
    'rotate': 'rotated about the centre by 10° .. 60° either way, background 0',
    'brightness': '25 .. 125 grey levels brighter, clipped at 255',
    'translate': 'moved 1 .. 5 pixels along each axis, random directions, background 0',
    'stripe': 'outer 5% .. 25% of the width inverted at both sides',
    'fog': 'blended with a fractal (plasma) haze',
    'spatter': 'grey blots (level 128) over 2% .. 21% of the image',
    'dotted_line': '1 .. 5 dotted white lines from the left edge to the right',
    'zigzag': '1 .. 5 white zigzag lines across the image',
    'canny_edges': "Canny edge map blended in, 20% .. 100% (100%: the edges alone)",
}

# Fixed constants of single corruptions (not varied with the severity).
MOTION_BLUR_MAX_DEGREES = 45.0  # the direction is uniform in ±this, from "right" (ImageNet-C's)
FOG_DECAY = 2.0  # amplitude ratio between successive octaves of the plasma fractal
SPATTER_SIGMA = 1.5  # blur of the white noise whose high values become blots, pixels
SPATTER_SOFTNESS = 0.5  # field rise (standard deviations) from a blot's edge to full cover
SPATTER_LEVEL = 128.0  # grey of a blot: as visible on a black background as on white ink
DASH_PIXELS = 2.0  # dotted lines: this long drawn, this long skipped (MNIST-C's)
ZIGZAG_STEP = 2.0  # zigzag: distance along the line from a crossing to a peak (MNIST-C's a)
ZIGZAG_HEIGHT = 2.0  # zigzag: distance of a peak from the line (MNIST-C's b)
ZIGZAG_MAX_TILT = 5  # zigzag: end row minus start row is uniform on -this .. this
CANNY_SIGMA, CANNY_LOW, CANNY_HIGH = 1.0, 0.1, 0.2  # skimage.feature.canny's defaults


# -----------------------------------------------------------------------------
# Checks and shared helpers.


def _check_name(name: str) -> str:
  if name not in CORRUPTIONS:
    raise ValueError(f'unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}')
  return name


def _check_severity(severity: int) -> int:
  # bool is an int, and 2.0 == 2: both would be accepted silently by `in`.
  if (isinstance(severity, bool) or not isinstance(severity, (int, np.integer))
      or severity not in SEVERITIES):
    raise ValueError(f'severity must be one of {SEVERITIES}, got {severity!r}')
  return int(severity)


def _prepare(images: np.ndarray, severity: int, table: tuple, rng: Rng) -> tuple:
  """(images as float64, the severity's parameter, a Generator), after checking both."""
  images = check_images(images)
  if images.shape[3] not in (1, 3):
    raise ValueError(f'expected grey (C=1) or RGB (C=3) images, got C={images.shape[3]} '
                     f'in shape {images.shape}')
  return images.astype(np.float64), table[_check_severity(severity) - 1], as_generator(rng)


def _correlate(x: np.ndarray, weights: Sequence[float], axis: int) -> np.ndarray:
  """out[i] = sum_j weights[j] * x[i + j - r] along `axis` (odd length 2r + 1), mirrored
  at the borders (the edge pixel repeated) so that a flat image stays flat."""
  radius = len(weights) // 2
  padding = [(0, 0)] * x.ndim
  padding[axis] = (radius, radius)
  padded = np.pad(x, padding, mode='symmetric')
  size = x.shape[axis]
  out = np.zeros(x.shape)
  for j, weight in enumerate(weights):
    if weight:
      out += weight * padded.take(np.arange(j, j + size), axis=axis)
  return out


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur over axes 1 and 2 (H and W), kernel cut at 4 sigma."""
  if sigma <= 0:
    return x
  radius = max(1, int(np.ceil(4 * sigma)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  return _correlate(_correlate(x, taps, axis=1), taps, axis=2)


def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, outside: str) -> np.ndarray:
  """Bilinear samples of x [N, H, W, C] at positions rows, cols [N, H', W'].

  outside='zero': positions beyond the image see 0 (the MNIST background);
  outside='edge': positions are clamped to the image (the border repeated).
  """
  height, width = x.shape[1:3]
  rows, cols = np.broadcast_arrays(rows, cols)
  # Rounding away float noise keeps whole-pixel positions whole (90° is a permutation).
  rows, cols = np.round(rows, 9), np.round(cols, 9)
  if outside == 'edge':
    rows, cols = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
  top, left = np.floor(rows), np.floor(cols)
  down, right = rows - top, cols - left
  top, left = top.astype(np.int64), left.astype(np.int64)
  batch = np.arange(x.shape[0]).reshape(-1, *([1] * (rows.ndim - 1)))
  out = np.zeros(rows.shape + x.shape[3:])
  for row, row_weight in ((top, 1 - down), (top + 1, down)):
    for col, col_weight in ((left, 1 - right), (left + 1, right)):
      inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
      weight = row_weight * col_weight * inside
      values = x[batch, np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)]
      out += weight[..., None] * values
  return out


def _random_signs(rng: np.random.Generator, size) -> np.ndarray:
  return rng.choice(np.array([-1.0, 1.0]), size=size)


# -----------------------------------------------------------------------------
# Noise.


def shot_noise(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Poisson(x * photons) / photons with x in [0, 1]: the mean is kept (up to the clip at
  white), the variance is x / photons, so fewer photons is noisier; black stays black."""
  x, photons, rng = _prepare(images, severity, SHOT_NOISE_PHOTONS, rng)
  return to_uint8(rng.poisson(x / 255.0 * photons) / photons * 255.0)


def impulse_noise(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Salt and pepper: each value (pixel and channel, as ImageNet-C) is replaced with
  probability `amount`, by 0 or 255 with equal odds."""
  x, amount, rng = _prepare(images, severity, IMPULSE_NOISE_AMOUNT, rng)
  # Both uniforms are drawn at every severity, so a higher amount only adds replacements.
  hit, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
  return to_uint8(np.where(hit < amount, np.where(salt, 255.0, 0.0), x))


# -----------------------------------------------------------------------------
# Blur.


def glass_blur(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Gaussian blur (sigma), then `passes` times every pixel takes the value of a random
  neighbour at most `max jump` rows and columns away (clamped to the image), then the
  blur again. ImageNet-C swaps pixels one at a time in a loop; taking a neighbour's value
  in one gather gives the same frosted-glass texture for a whole batch at once."""
  x, (sigma, jump, passes), rng = _prepare(images, severity, GLASS_BLUR, rng)
  count, height, width = x.shape[:3]
  rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
  batch = np.arange(count)[:, None, None]
  x = _gaussian_blur(x, sigma)
  for _ in range(passes):
    row_jump = rng.integers(-jump, jump + 1, size=(count, height, width))
    col_jump = rng.integers(-jump, jump + 1, size=(count, height, width))
    x = x[batch, np.clip(rows + row_jump, 0, height - 1), np.clip(cols + col_jump, 0, width - 1)]
  return to_uint8(_gaussian_blur(x, sigma))


def motion_blur(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """A one-sided trail: out(p) = sum_k w_k x(p - k u), k = 0 .. taps, w_k proportional to
  exp(-k^2 / (2 sigma^2)), u the unit vector at an angle uniform in ±45° counter-clockwise
  from "right" per image, so content is smeared toward +u (rightward for angle 0).
  Positions are sampled bilinearly and clamped to the image."""
  x, (taps, sigma), rng = _prepare(images, severity, MOTION_BLUR, rng)
  count, height, width = x.shape[:3]
  angle = np.deg2rad(rng.uniform(-MOTION_BLUR_MAX_DEGREES, MOTION_BLUR_MAX_DEGREES, size=count))
  step_row, step_col = -np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
  rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
  weights = np.exp(-0.5 * (np.arange(taps + 1) / sigma) ** 2)
  weights /= weights.sum()
  out = np.zeros(x.shape)
  for k, weight in enumerate(weights):
    out += weight * _sample(x, rows - k * step_row, cols - k * step_col, 'edge')
  return to_uint8(out)


# -----------------------------------------------------------------------------
# Geometric: each output pixel samples the input at an affine map of its position about
# the image centre ((H - 1) / 2, (W - 1) / 2), bilinearly, with 0 beyond the image.


def _warp(x: np.ndarray, matrices: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
  """out(c + d) = x(c + A d - t) per image: A = matrices [N, 2, 2] on (row, col) offsets d
  from the centre c, t = offsets [N, 2] (the content moves by t)."""
  count, height, width = x.shape[:3]
  d_row = (np.arange(height) - (height - 1) / 2)[None, :, None]
  d_col = (np.arange(width) - (width - 1) / 2)[None, None, :]
  a = matrices[:, :, :, None, None]
  rows = (height - 1) / 2 + a[:, 0, 0] * d_row + a[:, 0, 1] * d_col
  cols = (width - 1) / 2 + a[:, 1, 0] * d_row + a[:, 1, 1] * d_col
  if offsets is not None:
    rows, cols = rows - offsets[:, 0, None, None], cols - offsets[:, 1, None, None]
  return _sample(x, rows, cols, 'zero')


def _rotate(x: np.ndarray, degrees: np.ndarray) -> np.ndarray:
  """Rotate image i by degrees[i] counter-clockwise; 90 is stress.rotate90 on square images."""
  theta = np.deg2rad(np.asarray(degrees, np.float64))
  cos, sin = np.cos(theta), np.sin(theta)
  # The inverse rotation in (row, col), where rows grow downward.
  return _warp(x, np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2))


def _shear(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Row r moves factors[i] * (centre row - r) columns right: positive factors lean the
  content like italic type (top to the right, bottom to the left)."""
  factors = np.asarray(factors, np.float64)
  ones, zeros = np.ones_like(factors), np.zeros_like(factors)
  return _warp(x, np.stack([np.stack([ones, zeros], -1), np.stack([factors, ones], -1)], -2))


def _scale(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Zoom image i by factors[i] about the centre (below 1 shrinks it)."""
  inverse = 1.0 / np.asarray(factors, np.float64)
  zeros = np.zeros_like(inverse)
  return _warp(x, np.stack([np.stack([inverse, zeros], -1), np.stack([zeros, inverse], -1)], -2))


def _translate(x: np.ndarray, down: np.ndarray, right: np.ndarray) -> np.ndarray:
  """Move image i's content down[i] rows down and right[i] columns right."""
  down, right = np.asarray(down, np.float64), np.asarray(right, np.float64)
  identity = np.broadcast_to(np.eye(2), (x.shape[0], 2, 2))
  return _warp(x, identity, np.stack([down, right], -1))


def shear(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Horizontal shear by ±factor columns per row (sign uniform per image), see `_shear`."""
  x, factor, rng = _prepare(images, severity, SHEAR_FACTOR, rng)
  return to_uint8(_shear(x, factor * _random_signs(rng, x.shape[0])))


def scale(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Shrink about the centre by the severity's factor; the border becomes 0."""
  x, factor, _ = _prepare(images, severity, SCALE_FACTOR, rng)
  return to_uint8(_scale(x, np.full(x.shape[0], factor)))


def rotate(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Rotate about the centre by ±degrees, counter-clockwise for + (sign uniform per image)."""
  x, degrees, rng = _prepare(images, severity, ROTATE_DEGREES, rng)
  return to_uint8(_rotate(x, degrees * _random_signs(rng, x.shape[0])))


def translate(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Move the content `pixels` rows up or down and `pixels` columns left or right, both
  signs uniform per image; whole pixels, so values are moved exactly, 0 fills in."""
  x, pixels, rng = _prepare(images, severity, TRANSLATE_PIXELS, rng)
  signs = _random_signs(rng, (x.shape[0], 2))
  return to_uint8(_translate(x, pixels * signs[:, 0], pixels * signs[:, 1]))


# -----------------------------------------------------------------------------
# Photometric and overlays.


def brightness(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """stress.brightness by the severity's offset. On grey images this is MNIST-C's
  brightness (which raises HSV value); on RGB every channel is raised alike."""
  _, offset, _ = _prepare(images, severity, BRIGHTNESS_OFFSET, rng)
  return stress.brightness(images, offset)


def stripe(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Invert (255 - x) the rint(fraction * W) leftmost and rightmost columns, at least one
  each; severity 5 on 28 columns is MNIST-C's stripe (columns 0..6 and 21..27)."""
  x, fraction, _ = _prepare(images, severity, STRIPE_FRACTION, rng)
  width = x.shape[2]
  band = min(max(1, int(np.rint(fraction * width))), width)
  inverted = np.zeros(width, dtype=bool)
  inverted[:band] = inverted[width - band:] = True
  return to_uint8(np.where(inverted[None, None, :, None], 255.0 - x, x))


def _plasma(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
  """`count` plasma fractals [count, height, width] scaled to [0, 1] each (diamond-square
  on a wrapping grid of the next power of two; the jitter shrinks by FOG_DECAY per level)."""
  size = 1 << max(1, int(np.ceil(np.log2(max(height, width)))))
  grid = np.zeros((count, size, size))
  step, jitter = size, 1.0
  while step >= 2:
    half = step // 2
    corners = grid[:, ::step, ::step]
    # Square step: each cell's centre is the mean of its four corners, plus jitter.
    around = corners + np.roll(corners, -1, axis=1)
    around = around + np.roll(around, -1, axis=2)
    grid[:, half::step, half::step] = around / 4 + rng.uniform(-jitter, jitter, around.shape)
    centres = grid[:, half::step, half::step]
    # Diamond step: edge midpoints are the mean of the two corners and two centres beside them.
    across = corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)
    grid[:, ::step, half::step] = across / 4 + rng.uniform(-jitter, jitter, across.shape)
    down = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)
    grid[:, half::step, ::step] = down / 4 + rng.uniform(-jitter, jitter, down.shape)
    step, jitter = half, jitter / FOG_DECAY
  grid = grid[:, :height, :width]
  low = grid.min(axis=(1, 2), keepdims=True)
  span = grid.max(axis=(1, 2), keepdims=True) - low
  return (grid - low) / np.where(span > 0, span, 1.0)


def fog(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """(x + s * p) / (1 + s) on [0, 1], p a plasma fractal per image spanning [0, 1]: the
  haze brightens the background and dims the ink, both more with the strength s.
  ImageNet-C divides by (max(x) + s) instead, which blanks an all-black image."""
  x, strength, rng = _prepare(images, severity, FOG_STRENGTH, rng)
  haze = _plasma(rng, *x.shape[:3])[..., None]
  return to_uint8((x + strength * 255.0 * haze) / (1.0 + strength))


def spatter(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """Grey blots: white noise blurred (SPATTER_SIGMA) and standardised per image; where it
  exceeds the severity's threshold the image is blended toward SPATTER_LEVEL, fully once
  it exceeds it by SPATTER_SOFTNESS. A lower threshold grows every blot and adds new ones."""
  x, threshold, rng = _prepare(images, severity, SPATTER_THRESHOLD, rng)
  field = _gaussian_blur(rng.standard_normal(x.shape[:3]), SPATTER_SIGMA)
  spread = field.std(axis=(1, 2), keepdims=True)
  field = (field - field.mean(axis=(1, 2), keepdims=True)) / np.where(spread > 0, spread, 1.0)
  cover = np.clip((field - threshold) / SPATTER_SOFTNESS, 0.0, 1.0)[..., None]
  return to_uint8(x + cover * (SPATTER_LEVEL - x))


def _stroke(height: int, width: int, start: np.ndarray, end: np.ndarray,
            dash: float | None = None) -> np.ndarray:
  """Coverage [N, height, width] in [0, 1] of the segments start[i] -> end[i] ([N, 2] as
  (row, col)): 1 within half a pixel of the segment, falling linearly to 0 at 1.5 pixels
  (an anti-aliased line about two pixels wide). With `dash`, only the stretches whose
  distance from the start, along the segment, lies in [0, dash), [2 dash, 3 dash), ..."""
  rows = np.arange(height)[None, :, None].astype(np.float64)
  cols = np.arange(width)[None, None, :].astype(np.float64)
  start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
  d_row, d_col = (end - start)[:, 0, None, None], (end - start)[:, 1, None, None]
  length2 = d_row**2 + d_col**2
  # Position of each pixel's nearest point on the segment, as a fraction of its length.
  t = ((rows - start[:, 0, None, None]) * d_row + (cols - start[:, 1, None, None]) * d_col)
  t = np.clip(t / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
  distance = np.hypot(rows - start[:, 0, None, None] - t * d_row,
                      cols - start[:, 1, None, None] - t * d_col)
  cover = np.clip(1.5 - distance, 0.0, 1.0)
  if dash is not None:
    along = np.round(t * np.sqrt(length2), 9)  # whole-pixel positions stay whole
    cover = cover * (np.floor(along / dash) % 2 == 0)
  return cover


def _draw(x: np.ndarray, cover: np.ndarray) -> np.ndarray:
  """White strokes added with a clip, as MNIST-C does: x + 255 * cover in every channel."""
  return to_uint8(x + 255.0 * cover[..., None])


def dotted_line(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """`lines` dotted lines (DASH_PIXELS drawn, DASH_PIXELS skipped) from a random row of the
  left column to a random row of the right column, as MNIST-C's one."""
  x, lines, rng = _prepare(images, severity, DOTTED_LINES, rng)
  count, height, width = x.shape[:3]
  # Endpoints of the most lines any severity draws, so each severity adds to the last.
  ends = rng.integers(0, height, size=(2, count, max(DOTTED_LINES)))
  cover = np.zeros((count, height, width))
  for line in range(lines):
    start = np.stack([ends[0, :, line], np.zeros(count)], -1)
    end = np.stack([ends[1, :, line], np.full(count, width - 1)], -1)
    cover = np.maximum(cover, _stroke(height, width, start, end, dash=DASH_PIXELS))
  return _draw(x, cover)


def _zigzag_vertices(start: np.ndarray, end: np.ndarray, span: int) -> np.ndarray:
  """Vertices [N, K + 1, 2] of a zigzag along start -> end: K + 1 evenly spaced points, the
  k-th moved ZIGZAG_HEIGHT perpendicular to the line by [0, +1, 0, -1][k % 4]. K is a
  multiple of 4 (so both ends lie on the line) close to (span - 1) / ZIGZAG_STEP."""
  segments = 4 * max(1, int(np.rint((span - 1) / (4 * ZIGZAG_STEP))))
  fraction = np.arange(segments + 1) / segments
  along = start[:, None, :] + fraction[None, :, None] * (end - start)[:, None, :]
  length = np.linalg.norm(end - start, axis=-1, keepdims=True)
  direction = (end - start) / np.where(length > 0, length, 1.0)
  normal = np.stack([direction[:, 1], -direction[:, 0]], -1)  # +90° in (row, col)
  bump = ZIGZAG_HEIGHT * np.array([0.0, 1.0, 0.0, -1.0])[np.arange(segments + 1) % 4]
  return along + bump[None, :, None] * normal[:, None, :]


def zigzag(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """`lines` zigzags (peaks ZIGZAG_HEIGHT off the line, ZIGZAG_STEP along it, as MNIST-C)
  across the image from column W // 14 to W - 1 - W // 14 (2 to 25 on 28 columns); each
  starts on a random row and ends up to ZIGZAG_MAX_TILT rows above or below it, both at
  least ZIGZAG_HEIGHT rows inside the image so that the whole zigzag is drawn."""
  x, lines, rng = _prepare(images, severity, ZIGZAGS, rng)
  count, height, width = x.shape[:3]
  first, last = width // 14, width - 1 - width // 14
  # The line's rows stay ZIGZAG_HEIGHT inside the image, so its peaks do too.
  middle = (height - 1) // 2
  top, bottom = min(int(ZIGZAG_HEIGHT), middle), max(height - 1 - int(ZIGZAG_HEIGHT), middle)
  most = max(ZIGZAGS)
  start_row = rng.integers(top, bottom + 1, size=(count, most))
  tilt = rng.integers(-ZIGZAG_MAX_TILT, ZIGZAG_MAX_TILT + 1, size=(count, most))
  end_row = np.clip(start_row + tilt, top, bottom)
  cover = np.zeros((count, height, width))
  for line in range(lines):
    start = np.stack([start_row[:, line], np.full(count, first)], -1).astype(np.float64)
    end = np.stack([end_row[:, line], np.full(count, last)], -1).astype(np.float64)
    vertices = _zigzag_vertices(start, end, last - first + 1)
    for k in range(vertices.shape[1] - 1):
      cover = np.maximum(cover, _stroke(height, width, vertices[:, k], vertices[:, k + 1]))
  return _draw(x, cover)


# -----------------------------------------------------------------------------
# Edges.


def _dilate(mask: np.ndarray) -> np.ndarray:
  """mask [N, H, W] grown by one pixel to its 8 neighbours."""
  height, width = mask.shape[1:]
  padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
  out = np.zeros_like(mask)
  for dr in range(3):
    for dc in range(3):
      out |= padded[:, dr:dr + height, dc:dc + width]
  return out


def canny(images: np.ndarray, sigma: float = CANNY_SIGMA, low: float = CANNY_LOW,
          high: float = CANNY_HIGH) -> np.ndarray:
  """Canny edges [N, H, W] (bool) of the channel mean of uint8 images scaled to [0, 1].

  1. Gaussian blur (sigma, mirrored borders). 2. Sobel gradients (weights 1, 2, 1 across,
  -1, 0, 1 along; a ramp rising 1 per pixel gives 8). 3. Non-maximum suppression: a pixel
  stays if its magnitude is >= its neighbour behind and > its neighbour ahead along the
  gradient direction, taken to the nearest of 0°, 45°, 90°, 135°; the asymmetry keeps one
  pixel of a two-pixel tie, the later one (right of a vertical step, below a horizontal one).
  4. Hysteresis: pixels >= high are edges, and so are pixels >= low joined to an edge
  through 8-connected pixels >= low. The defaults are skimage.feature.canny's.
  """
  grey = check_images(images).astype(np.float64).mean(axis=3) / 255.0
  smooth = _gaussian_blur(grey, sigma)
  grad_row = _correlate(_correlate(smooth, (-1, 0, 1), axis=1), (1, 2, 1), axis=2)
  grad_col = _correlate(_correlate(smooth, (1, 2, 1), axis=1), (-1, 0, 1), axis=2)
  # Rounded so that mirror-image magnitudes tie exactly and break the same way everywhere.
  magnitude = np.round(np.hypot(grad_row, grad_col), 12)
  direction = np.rad2deg(np.arctan2(grad_row, grad_col)) % 180.0
  sector = np.rint(direction / 45.0).astype(np.int64) % 4
  height, width = grey.shape[1:]
  padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))

  def neighbour(dr, dc):
    return padded[:, 1 + dr:1 + dr + height, 1 + dc:1 + dc + width]

  peak = np.zeros(magnitude.shape, dtype=bool)
  for index, (dr, dc) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
    keep = (magnitude >= neighbour(-dr, -dc)) & (magnitude > neighbour(dr, dc))
    peak |= (sector == index) & keep
  candidate = peak & (magnitude >= low)
  edges = peak & (magnitude >= high)
  while True:
    grown = edges | (candidate & _dilate(edges))
    if np.array_equal(grown, edges):
      return edges
    edges = grown


def canny_edges(images: np.ndarray, severity: int, rng: Rng = None) -> np.ndarray:
  """(1 - m) x + m * 255 * edges, m the severity's mix: severity 5 (m = 1) is MNIST-C's
  canny_edges, the white edge map alone; lower severities fade the image into it, so the
  distance from the original grows in proportion to m."""
  x, mix, _ = _prepare(images, severity, CANNY_MIX, rng)
  edges = canny(images)[..., None] * 255.0
  return to_uint8((1.0 - mix) * x + mix * edges)


# -----------------------------------------------------------------------------
# Registry and suite.

CORRUPTIONS: dict[str, Corruption] = {
    'shot_noise': shot_noise,
    'impulse_noise': impulse_noise,
    'glass_blur': glass_blur,
    'motion_blur': motion_blur,
    'shear': shear,
    'scale': scale,
    'rotate': rotate,
    'brightness': brightness,
    'translate': translate,
    'stripe': stripe,
    'fog': fog,
    'spatter': spatter,
    'dotted_line': dotted_line,
    'zigzag': zigzag,
    'canny_edges': canny_edges,
}

_LABEL = re.compile(r'(?P<name>\w+)_s(?P<severity>[1-9])')


def corrupt(images: np.ndarray, name: str, severity: int, rng: Rng = None) -> np.ndarray:
  """Corruption `name` at `severity` (1..5); `rng` a Generator, a seed or None (fresh)."""
  return CORRUPTIONS[_check_name(name)](images, _check_severity(severity), rng)


def set_label(name: str, severity: int) -> str:
  """'<name>_s<severity>', e.g. 'shot_noise_s3': a filename-safe stress-set label."""
  return f'{_check_name(name)}_s{_check_severity(severity)}'


def parse_label(label: str) -> tuple[str, int] | None:
  """(name, severity) of a `set_label` label; None for any other label."""
  match = _LABEL.fullmatch(label) if isinstance(label, str) else None
  if match is None:
    return None
  name, severity = match['name'], int(match['severity'])
  return (name, severity) if name in CORRUPTIONS and severity in SEVERITIES else None


def corruption_suite(images: np.ndarray, names: Sequence[str], severities: Sequence[int],
                     seed: np.random.Generator | int = 0) -> dict[str, np.ndarray]:
  """{set_label(name, s): corrupted images} for every name and severity.

  Every entry draws from stress.entry_rng(name, seed), restarted per severity: the same
  draws at every severity, and nothing shared with the other names (a Generator `seed`
  gives one integer draw that replaces it, as in stress.stress_suite).
  """
  if isinstance(names, str):
    raise ValueError(f'names must be a sequence of corruption names, not the string {names!r}; '
                     f'known: {sorted(CORRUPTIONS)}')
  unknown = [name for name in names if name not in CORRUPTIONS]
  if unknown:
    raise ValueError(f'unknown corruptions {unknown}; known: {sorted(CORRUPTIONS)}')
  for severity in severities:
    _check_severity(severity)
  images = check_images(images)
  seed = stress.suite_seed(seed)
  return {set_label(name, severity):
              CORRUPTIONS[name](images, severity, stress.entry_rng(name, seed))
          for name in names for severity in severities}
