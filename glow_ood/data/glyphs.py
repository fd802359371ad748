"""notmnist_glyphs: a NotMNIST analogue, letters A-J rendered from installed fonts.

NotMNIST (Bulatov 2011) is A-J in many fonts, 28 x 28 grey, white on black.
Here every TrueType/OpenType file under a fonts directory (default
/usr/share/fonts, symlinks followed) that draws ten distinct, non-empty letters
is used; fonts that map A-J to symbols (dingbats, Greek symbol fonts) are
skipped by family name.

Each letter is drawn large, cropped to its ink, scaled (area averaging) so its
longer side is one of GLYPH_BOXES pixels, and placed at the centre of a 28 x 28
canvas shifted by each of SHIFTS in x and y: 3 sizes x 9 shifts = 27 images per
font and letter.

Split: by font family, so test letters come from families never seen in
training. Families are ranked by the SHA-256 of their name and the first
ceil(20%) are 'test'; the rest are 'train'. Everything is deterministic for a
given set of font files. Order: family, file name, letter, size, dy, dx.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glow_ood.data.errors import unavailable

LETTERS = 'ABCDEFGHIJ'
CANVAS = 28
GLYPH_BOXES = (20, 23, 26)  # longer side of the glyph's ink, pixels
SHIFTS = (-1, 0, 1)  # pixels, applied in x and in y
VARIANTS_PER_LETTER = len(GLYPH_BOXES) * len(SHIFTS) ** 2
TEST_FRACTION = 0.2
FONT_EXTENSIONS = ('.ttf', '.otf', '.ttc')
# Families that put symbols, not Latin letters, at A-J.
NON_LETTER_FAMILIES = ('dingbat', 'symbol', 'd050000l')

_RENDER_POINTS = 96
_NOT_A_LETTER = '\ue000'  # private-use code point: most fonts draw .notdef here


def find_font_files(fonts_dir: str) -> list[str]:
  """Real paths of font files under fonts_dir, sorted, without duplicates."""
  found = set()
  for root, _, files in os.walk(fonts_dir, followlinks=True):
    for name in files:
      if name.lower().endswith(FONT_EXTENSIONS):
        found.add(os.path.realpath(os.path.join(root, name)))
  return sorted(found)


def _draw_ink(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
  """The text drawn white on black, cropped to its ink (empty if no ink)."""
  size = 4 * _RENDER_POINTS  # room for swashes and deep descenders
  image = Image.new('L', (size, size))
  ImageDraw.Draw(image).text((_RENDER_POINTS, _RENDER_POINTS), text,
                             fill=255, font=font)
  bbox = image.getbbox()
  if bbox is None:
    return np.zeros((0, 0), np.uint8)
  return np.asarray(image.crop(bbox))


def _letters_of(path: str) -> tuple[str, list[np.ndarray]] | None:
  """(family, ink of A-J) if the font draws ten distinct letters, else None."""
  try:
    font = ImageFont.truetype(path, _RENDER_POINTS)
  except OSError:
    return None
  family = font.getname()[0] or os.path.basename(path)
  if any(word in family.lower() for word in NON_LETTER_FAMILIES):
    return None
  inks = [_draw_ink(font, letter) for letter in LETTERS]
  notdef = _draw_ink(font, _NOT_A_LETTER)

  def same(a, b):
    return a.shape == b.shape and np.array_equal(a, b)

  if any(ink.size == 0 or same(ink, notdef) for ink in inks):
    return None
  if any(same(inks[i], inks[j]) for i in range(len(inks)) for j in range(i)):
    return None
  return family, inks


def _place(ink: np.ndarray, box: int, dx: int, dy: int) -> np.ndarray:
  """Scales ink so its longer side is `box` px and pastes it centred + (dx, dy)."""
  height, width = ink.shape
  scale = box / max(height, width)
  new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
  small = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.BOX)
  canvas = Image.new('L', (CANVAS, CANVAS))
  canvas.paste(small, ((CANVAS - new_w) // 2 + dx, (CANVAS - new_h) // 2 + dy))
  return np.asarray(canvas)


def split_families(families: list[str]) -> dict[str, str]:
  """Family -> 'train' | 'test', ranked by a hash so it is stable and arbitrary."""
  ranked = sorted(set(families),
                  key=lambda f: (hashlib.sha256(f.encode()).hexdigest(), f))
  num_test = math.ceil(TEST_FRACTION * len(ranked))
  return {family: ('test' if rank < num_test else 'train')
          for rank, family in enumerate(ranked)}


@functools.lru_cache(maxsize=2)
def _render_all(fonts_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Split -> (read-only uint8 [N, 28, 28, 1] images, letter labels [N])."""
  fonts = []
  for path in find_font_files(fonts_dir):
    letters = _letters_of(path)
    if letters is not None:
      fonts.append((letters[0], os.path.basename(path), letters[1]))
  if not fonts:
    raise unavailable(f'No usable TrueType/OpenType font under {fonts_dir}.',
                      [f'{fonts_dir}/**/*{{{",".join(FONT_EXTENSIONS)}}}'])
  split_of = split_families([family for family, _, _ in fonts])
  rendered = {'train': ([], []), 'test': ([], [])}
  for family, _, inks in sorted(fonts, key=lambda f: (f[0], f[1])):
    images, labels = rendered[split_of[family]]
    for label, ink in enumerate(inks):
      for box in GLYPH_BOXES:
        for dy in SHIFTS:
          for dx in SHIFTS:
            images.append(_place(ink, box, dx, dy))
            labels.append(label)
  out = {}
  for split, (images, labels) in rendered.items():
    if not images:
      continue
    array = np.stack(images)[..., None]
    array.flags.writeable = False  # cached: every caller shares it
    out[split] = (array, np.asarray(labels))
  return out


def _rendered_split(fonts_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  if split not in ('train', 'test'):
    raise ValueError(f"notmnist_glyphs has splits 'train' and 'test', not {split!r}.")
  if not os.path.isdir(fonts_dir):
    raise unavailable(f'Fonts directory not found: {fonts_dir}', [fonts_dir])
  rendered = _render_all(os.path.realpath(fonts_dir))
  if split not in rendered:
    raise unavailable(
        f'The fonts under {fonts_dir} give no {split!r} glyphs: too few font '
        'families to split.', [fonts_dir])
  return rendered[split]


def render_glyphs(fonts_dir: str, split: str) -> np.ndarray:
  """uint8 [N, 28, 28, 1] renderings of A-J for a split ('train' | 'test'), read-only."""
  return _rendered_split(fonts_dir, split)[0]


def glyph_labels(fonts_dir: str, split: str) -> np.ndarray:
  """Letter index (0 = A ... 9 = J) of each image render_glyphs returns."""
  return _rendered_split(fonts_dir, split)[1]
