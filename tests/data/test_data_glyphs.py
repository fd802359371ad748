"""notmnist_glyphs: letters A-J rendered from installed fonts."""

import glob
import os
import shutil

import numpy as np
import pytest

from glow_ood.data import DataSpec
from glow_ood.data import DataUnavailableError
from glow_ood.data import glyphs
from glow_ood.data import load_array

FONTS = sorted(glob.glob('/usr/share/fonts/truetype/dejavu/DejaVu*.ttf'))
pytestmark = pytest.mark.skipif(not FONTS, reason='no DejaVu font installed')


@pytest.fixture(name='fonts_dir')
def fixture_fonts_dir(tmp_path):
  # Sans and Serif (+ Mono): enough families for both splits.
  for name in ('DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf',
               'DejaVuSans-Bold.ttf'):
    source = os.path.join('/usr/share/fonts/truetype/dejavu', name)
    if os.path.exists(source):
      shutil.copy(source, tmp_path / name)
  if len(os.listdir(tmp_path)) < 2:
    pytest.skip('fewer than two DejaVu families installed')
  return str(tmp_path)


def test_shapes_labels_and_split_by_family(fonts_dir):
  train = glyphs.render_glyphs(fonts_dir, 'train')
  test = glyphs.render_glyphs(fonts_dir, 'test')
  for images in (train, test):
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    assert len(images) % (10 * glyphs.VARIANTS_PER_LETTER) == 0
    assert images.max() == 255 and images.min() == 0  # white ink on black
  num_fonts = len(os.listdir(fonts_dir))
  assert len(train) + len(test) == num_fonts * 10 * glyphs.VARIANTS_PER_LETTER
  labels = glyphs.glyph_labels(fonts_dir, 'test')
  np.testing.assert_array_equal(
      labels[:10 * glyphs.VARIANTS_PER_LETTER],
      np.repeat(np.arange(10), glyphs.VARIANTS_PER_LETTER))


def test_deterministic_and_distinct_letters(fonts_dir):
  first = glyphs.render_glyphs(fonts_dir, 'test').copy()
  glyphs._render_all.cache_clear()
  again = glyphs.render_glyphs(fonts_dir, 'test')
  np.testing.assert_array_equal(first, again)
  per_letter = first[::glyphs.VARIANTS_PER_LETTER][:10]  # same variant, A..J
  assert len({image.tobytes() for image in per_letter}) == 10


def test_glyph_fits_its_box(fonts_dir):
  images = glyphs.render_glyphs(fonts_dir, 'train')[..., 0]
  for image in images[:glyphs.VARIANTS_PER_LETTER]:  # the variants of one 'A'
    rows, cols = np.nonzero(image)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    assert min(glyphs.GLYPH_BOXES) - 1 <= extent <= max(glyphs.GLYPH_BOXES) + 1


def test_load_array_pads_to_32(fonts_dir):
  images = load_array(DataSpec('notmnist_glyphs', path=fonts_dir, channels=3), 'test')
  assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
  assert images[:, :2].max() == 0


def test_family_split_is_a_stable_fifth():
  families = [f'family{i}' for i in range(10)]
  split = glyphs.split_families(families)
  assert sum(v == 'test' for v in split.values()) == 2
  assert split == glyphs.split_families(list(reversed(families)))


def test_no_fonts_is_unavailable(tmp_path):
  with pytest.raises(DataUnavailableError, match='fonts-dejavu-core'):
    load_array(DataSpec('notmnist_glyphs', path=str(tmp_path)), 'train')
