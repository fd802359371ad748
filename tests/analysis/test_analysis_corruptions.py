"""MNIST-C corruptions: hand-computed tiny images, severity ordering on digits, seeding, labels."""

import functools
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from glow_ood.analysis import corruptions, stress

NAMES = ('shot_noise', 'impulse_noise', 'glass_blur', 'motion_blur', 'shear', 'scale', 'rotate',
         'brightness', 'translate', 'stripe', 'fog', 'spatter', 'dotted_line', 'zigzag',
         'canny_edges')
RANDOM = ('shot_noise', 'impulse_noise', 'glass_blur', 'motion_blur', 'shear', 'rotate',
          'translate', 'fog', 'spatter', 'dotted_line', 'zigzag')


def _grey(rows) -> np.ndarray:
  """One grey image [1, H, W, 1] from nested lists."""
  return np.array(rows, dtype=np.uint8)[None, :, :, None]


def _filled(shape, level) -> np.ndarray:
  return np.full(shape, level, dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def _digits() -> np.ndarray:
  """48 sklearn digits as MNIST-like grey images: 8x8 scaled to 20x20, centred in 28x28."""
  small = load_digits().images[:48] * (255.0 / 16.0)
  large = [np.asarray(Image.fromarray(im.astype(np.uint8)).resize((20, 20), Image.BILINEAR))
           for im in small]
  return np.pad(np.stack(large), ((0, 0), (4, 4), (4, 4)))[..., None]


@functools.lru_cache(maxsize=None)
def _colour_digits() -> np.ndarray:
  """The digits in colour on a non-black background (every channel differs)."""
  grey = _digits()[..., 0].astype(np.float64)
  return np.stack([grey, 0.6 * grey + 50, 200 - 0.7 * grey], -1).astype(np.uint8)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# -----------------------------------------------------------------------------
# Registry, shapes and ordering of the severities.


def test_registry_holds_the_fifteen_mnist_c_corruptions():
  assert tuple(corruptions.CORRUPTIONS) == NAMES
  assert set(corruptions.DESCRIPTIONS) == set(NAMES) == set(corruptions.PARAMETERS)
  assert all(len(table) == 5 for table in corruptions.PARAMETERS.values())
  assert all(corruptions.DESCRIPTIONS[name] for name in NAMES)
  assert corruptions.SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('images', [_digits, _colour_digits], ids=['grey', 'rgb'])
def test_severity_increases_the_distance_from_the_original(name, images):
  x = images()
  suite = corruptions.corruption_suite(x, [name], corruptions.SEVERITIES, seed=0)
  distances = [_distance(suite[corruptions.set_label(name, s)], x) for s in corruptions.SEVERITIES]
  assert distances[0] > 0.5
  assert all(later > earlier for earlier, later in zip(distances, distances[1:])), distances


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('shape', [(3, 28, 28, 1), (2, 12, 16, 3)])
def test_shape_and_dtype_are_kept(name, shape):
  x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
  before = x.copy()
  for severity in (1, 5):
    out = corruptions.corrupt(x, name, severity, rng=1)
    assert out.shape == shape and out.dtype == np.uint8
  np.testing.assert_array_equal(x, before)  # the input is left alone


# -----------------------------------------------------------------------------
# Seeding and labels.


def test_same_seed_same_images_and_entries_independent_of_the_others():
  x = _digits()[:6]
  full = corruptions.corruption_suite(x, NAMES, (1, 3, 5), seed=7)
  assert sorted(full) == sorted(corruptions.set_label(n, s) for n in NAMES for s in (1, 3, 5))
  again = corruptions.corruption_suite(x, NAMES, (1, 3, 5), seed=7)
  for label in full:
    np.testing.assert_array_equal(full[label], again[label])
  for name in NAMES:
    alone = corruptions.corruption_suite(x, [name], [3], seed=7)
    np.testing.assert_array_equal(alone[f'{name}_s3'], full[f'{name}_s3'])
  other = corruptions.corruption_suite(x, RANDOM, [3], seed=8)
  for name in RANDOM:
    assert not np.array_equal(other[f'{name}_s3'], full[f'{name}_s3']), name
  # corrupt with the entry's stream is the suite's entry; a Generator seed draws one integer.
  np.testing.assert_array_equal(corruptions.corrupt(x, 'fog', 3, stress.entry_rng('fog', 7)),
                                full['fog_s3'])
  from_generator = corruptions.corruption_suite(x, ['fog'], [3], seed=np.random.default_rng(5))
  seed = int(np.random.default_rng(5).integers(2**63))
  np.testing.assert_array_equal(from_generator['fog_s3'],
                                corruptions.corruption_suite(x, ['fog'], [3], seed=seed)['fog_s3'])


def test_labels_round_trip_and_other_labels_are_not_corruptions():
  for name in NAMES:
    for severity in corruptions.SEVERITIES:
      label = corruptions.set_label(name, severity)
      assert re.fullmatch(r'[a-z_]+_s[1-5]', label)
      assert corruptions.parse_label(label) == (name, severity)
  assert corruptions.set_label('shot_noise', 3) == 'shot_noise_s3'
  assert corruptions.set_label('rotate', np.int64(2)) == 'rotate_s2'
  for label in ('rotate90', 'shift4', 'noise16', 'shot_noise', 'shot_noise_s0', 'shot_noise_s6',
                'shot_noise_s10', 'shot_noise_s3x', 'blur_s3', '_s3', 'shot_noise_S3', ''):
    assert corruptions.parse_label(label) is None, label


def test_bad_input_raises_value_error_naming_the_allowed_values():
  x = _filled((1, 4, 4, 1), 10)
  with pytest.raises(ValueError, match='shot_noise'):
    corruptions.corrupt(x, 'gaussian_blur', 1)
  for severity in (0, 6, -1, 2.0, True, '3', None):
    with pytest.raises(ValueError, match=re.escape('(1, 2, 3, 4, 5)')):
      corruptions.corrupt(x, 'rotate', severity)
    with pytest.raises(ValueError, match=re.escape('(1, 2, 3, 4, 5)')):
      corruptions.CORRUPTIONS['fog'](x, severity, 0)
  with pytest.raises(ValueError, match='uint8'):
    corruptions.corrupt(x.astype(np.float32), 'fog', 1)
  with pytest.raises(ValueError, match='uint8'):
    corruptions.corrupt(x[0], 'fog', 1)
  with pytest.raises(ValueError, match='C=3'):
    corruptions.corrupt(_filled((1, 4, 4, 2), 10), 'stripe', 1)
  with pytest.raises(ValueError, match='zigzag'):
    corruptions.set_label('zig_zag', 1)
  with pytest.raises(ValueError, match=re.escape('(1, 2, 3, 4, 5)')):
    corruptions.set_label('zigzag', 7)
  with pytest.raises(ValueError, match="'fog'"):
    corruptions.corruption_suite(x, ['fog', 'smoke'], [1])
  with pytest.raises(ValueError, match=re.escape('(1, 2, 3, 4, 5)')):
    corruptions.corruption_suite(x, ['fog'], [1, 9])
  with pytest.raises(ValueError, match='not the string'):
    corruptions.corruption_suite(x, 'fog', [1])
  with pytest.raises(ValueError, match='uint8'):
    corruptions.corruption_suite(x.astype(np.int64), ['fog'], [1])


# -----------------------------------------------------------------------------
# Noise.


def test_shot_noise_keeps_black_and_the_mean_and_grows_the_spread():
  black = _filled((2, 8, 8, 3), 0)
  for severity in corruptions.SEVERITIES:
    np.testing.assert_array_equal(corruptions.shot_noise(black, severity, 0), black)
  grey = _filled((4, 32, 32, 3), 64)
  spreads = []
  for severity, photons in zip(corruptions.SEVERITIES, corruptions.SHOT_NOISE_PHOTONS):
    out = corruptions.shot_noise(grey, severity, 0)
    assert abs(out.mean() - 64) < 2.0
    # Values are whole photon counts: k * 255 / photons, rounded.
    levels = np.rint(np.arange(photons + 1) * 255.0 / photons)
    assert np.isin(out, levels).all()
    spreads.append(out.std())
  assert all(later > earlier for earlier, later in zip(spreads, spreads[1:]))


def test_impulse_noise_sets_values_to_black_or_white_in_the_stated_fraction():
  x = _filled((4, 32, 32, 3), 100)
  changed_before = np.zeros(x.shape, dtype=bool)
  for severity, amount in zip(corruptions.SEVERITIES, corruptions.IMPULSE_NOISE_AMOUNT):
    out = corruptions.impulse_noise(x, severity, 3)
    changed = out != x
    assert np.isin(out[changed], (0, 255)).all()
    assert abs(changed.mean() - amount) < 0.015
    assert abs((out[changed] == 255).mean() - 0.5) < 0.1
    assert not (changed_before & ~changed).any()  # each severity keeps the last one's hits
    changed_before = changed


# -----------------------------------------------------------------------------
# Blur.


@pytest.mark.parametrize('name', ['glass_blur', 'motion_blur'])
def test_blurs_keep_a_flat_image(name):
  x = _filled((2, 9, 11, 3), 77)
  for severity in corruptions.SEVERITIES:
    np.testing.assert_array_equal(corruptions.corrupt(x, name, severity, 0), x)


def test_glass_blur_stays_local():
  x = np.zeros((4, 24, 24, 1), dtype=np.uint8)
  x[:, 10:14, 10:14] = 255
  out = corruptions.glass_blur(x, 1, 0)  # sigma 0.7 (3 pixel kernel), one jump of 1
  assert (out != x).any()
  reach = np.zeros((24, 24), dtype=bool)
  reach[10 - 7:14 + 7, 10 - 7:14 + 7] = True  # 3 + 1 + 3 pixels around the square
  assert (out[:, ~reach] == 0).all()


def test_motion_blur_trails_one_way_and_keeps_the_mass():
  x = np.zeros((16, 21, 21, 1), dtype=np.uint8)
  x[:, 10, 4] = 255
  for severity in corruptions.SEVERITIES:
    out = corruptions.motion_blur(x, severity, 2)[..., 0].astype(np.int64)
    rows, cols = np.nonzero(out.sum(axis=0))
    # Smeared rightward within 45 degrees (plus one pixel of bilinear spread).
    assert (cols >= 4).all()
    assert (np.abs(rows - 10) <= cols - 4 + 1).all()
    # Weights sum to one: the total moves only by the rounding of each touched pixel.
    touched = (out > 0).sum(axis=(1, 2))
    assert (np.abs(out.sum(axis=(1, 2)) - 255) <= 0.5 * touched).all()


# -----------------------------------------------------------------------------
# Geometric.


def test_rotation_by_90_degrees_is_the_exact_quarter_turn():
  x = np.random.default_rng(0).integers(0, 256, size=(2, 6, 6, 3), dtype=np.uint8)
  floats = x.astype(np.float64)
  np.testing.assert_array_equal(stress.to_uint8(corruptions._rotate(floats, [90, 90])),
                                stress.rotate90(x))
  expected = np.concatenate([stress.rotate90(x[:1], 3), stress.rotate90(x[1:], 2)])
  np.testing.assert_array_equal(stress.to_uint8(corruptions._rotate(floats, [-90, 180])), expected)
  grid = _grey([[1, 2, 3], [4, 5, 6], [7, 8, 9]]).astype(np.float64)
  turned = corruptions._rotate(grid, [90])[0, :, :, 0].round().tolist()
  assert turned == [[3, 6, 9], [2, 5, 8], [1, 4, 7]]


def test_rotate_turns_each_image_one_way_or_the_other():
  x = np.repeat(_digits()[:1], 12, axis=0)
  for severity, degrees in zip(corruptions.SEVERITIES, corruptions.ROTATE_DEGREES):
    out = corruptions.rotate(x, severity, 4)
    left = stress.to_uint8(corruptions._rotate(x[:1].astype(np.float64), [degrees]))[0]
    right = stress.to_uint8(corruptions._rotate(x[:1].astype(np.float64), [-degrees]))[0]
    is_left = [np.array_equal(image, left) for image in out]
    is_right = [np.array_equal(image, right) for image in out]
    assert all(a or b for a, b in zip(is_left, is_right)) and any(is_left) and any(is_right)


def test_shear_leans_a_vertical_bar_like_italic_or_backslash():
  bar = np.zeros((12, 5, 5, 1), dtype=np.uint8)
  bar[:, :, 2] = 200
  italic = np.zeros((5, 5), dtype=np.uint8)
  italic[[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]] = 200  # factor +1: the top moves right
  sheared = corruptions._shear(bar[:1].astype(np.float64), [1.0])
  np.testing.assert_array_equal(stress.to_uint8(sheared)[0, :, :, 0], italic)
  out = corruptions.shear(bar, 5, 0)[..., 0]
  is_italic = [np.array_equal(image, italic) for image in out]
  is_backslash = [np.array_equal(image, italic[:, ::-1]) for image in out]
  assert all(a or b for a, b in zip(is_italic, is_backslash))
  assert any(is_italic) and any(is_backslash)


def test_scale_shrinks_about_the_centre():
  white = _filled((1, 8, 8, 1), 255)
  half = corruptions.scale(white, 5)[0, :, :, 0]  # factor 0.5: the middle 4x4
  expected = np.zeros((8, 8), dtype=np.uint8)
  expected[2:6, 2:6] = 255
  np.testing.assert_array_equal(half, expected)
  # Factor 0.9 on 10x10: row 0 samples row -0.5 (half background: 127.5 -> 128), the
  # corners a quarter (63.75 -> 64), the rest lies inside.
  tenth = corruptions.scale(_filled((1, 10, 10, 3), 255), 1)[0, :, :, 1]
  assert tenth[0, 0] == tenth[9, 9] == 64
  assert (tenth[0, 1:9] == 128).all() and (tenth[1:9, 9] == 128).all()
  assert (tenth[1:9, 1:9] == 255).all()


def test_translate_moves_content_whole_pixels_in_both_axes():
  x = np.zeros((32, 28, 28, 1), dtype=np.uint8)
  x[:, 10, 12] = 200
  for severity, pixels in zip(corruptions.SEVERITIES, corruptions.TRANSLATE_PIXELS):
    out = corruptions.translate(x, severity, 5)[..., 0]
    moves = set()
    for image in out:
      (row,), (col,) = np.nonzero(image)
      assert image[row, col] == 200
      moves.add((row - 10, col - 12))
    assert moves == {(dr, dc) for dr in (-pixels, pixels) for dc in (-pixels, pixels)}
  edge = np.zeros((8, 6, 6, 3), dtype=np.uint8)
  edge[:, 0, 0] = 90
  out = corruptions.translate(edge, 1, 0)
  # Moved up or left, the corner pixel leaves the image; down and right it lands at (1, 1).
  assert set(np.unique(out)) <= {0, 90}
  assert all(image.sum() in (0, 3 * 90) for image in out)


# -----------------------------------------------------------------------------
# Photometric and overlays.


def test_brightness_adds_the_offset_and_clips():
  x = _grey([[0, 100], [200, 250]])
  assert corruptions.brightness(x, 1)[0, :, :, 0].tolist() == [[25, 125], [225, 255]]
  assert corruptions.brightness(x, 5)[0, :, :, 0].tolist() == [[125, 225], [255, 255]]


def test_stripe_inverts_the_outer_columns():
  x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 28, 3), dtype=np.uint8)
  for severity, band in ((5, 7), (1, 1), (3, 4)):  # rint(fraction * 28): 7 is MNIST-C's stripe
    inverted = np.zeros(28, dtype=bool)
    inverted[:band] = inverted[28 - band:] = True
    expected = np.where(inverted[None, None, :, None], 255 - x, x)
    np.testing.assert_array_equal(corruptions.stripe(x, severity), expected)
  narrow = corruptions.stripe(_filled((1, 2, 4, 1), 0), 1)  # at least one column each side
  assert narrow[0, :, :, 0].tolist() == [[255, 0, 0, 255]] * 2


def test_fog_spans_from_the_image_to_the_full_haze():
  for severity, strength in zip(corruptions.SEVERITIES, corruptions.FOG_STRENGTH):
    black = corruptions.fog(_filled((3, 28, 28, 1), 0), severity, 0)
    assert (black.min(axis=(1, 2, 3)) == 0).all()
    assert (black.max(axis=(1, 2, 3)) == np.rint(255 * strength / (1 + strength))).all()
    white = corruptions.fog(_filled((3, 28, 28, 3), 255), severity, 0)
    assert (white.max(axis=(1, 2, 3)) == 255).all()
    assert (white.min(axis=(1, 2, 3)) == np.rint(255 / (1 + strength))).all()


def test_spatter_blends_toward_grey_blots_that_grow_with_severity():
  black, white = _filled((4, 28, 28, 1), 0), _filled((4, 28, 28, 1), 255)
  covered_before = np.zeros(black.shape, dtype=bool)
  for severity in corruptions.SEVERITIES:
    on_black = corruptions.spatter(black, severity, 6)
    on_white = corruptions.spatter(white, severity, 6)
    assert on_black.max() <= 128 and on_white.min() >= 128
    covered = on_black > 0
    np.testing.assert_array_equal(covered, on_white < 255)  # the same blots on both
    assert covered.any() and not (covered_before & ~covered).any()
    covered_before = covered
  assert (on_black == 128).any()


def test_stroke_is_one_pixel_solid_with_half_covered_neighbours_and_dashes():
  start, end = np.array([[3.0, 0.0]]), np.array([[3.0, 9.0]])
  solid = corruptions._stroke(7, 10, start, end)[0]
  assert (solid[3] == 1).all() and (solid[[2, 4]] == 0.5).all()
  assert (solid[[0, 1, 5, 6]] == 0).all()
  dashed = corruptions._stroke(7, 10, start, end, dash=2.0)[0]
  on = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
  assert (dashed[3, on] == 1).all() and (dashed[3, ~on] == 0).all()
  assert (dashed[[2, 4]][:, on] == 0.5).all() and (dashed[[2, 4]][:, ~on] == 0).all()


def test_dotted_lines_start_at_the_left_edge_add_up_and_only_brighten():
  black = np.zeros((8, 28, 28, 1), dtype=np.uint8)
  before = black[..., 0]
  for severity in corruptions.SEVERITIES:
    out = corruptions.dotted_line(black, severity, 9)[..., 0]
    # Each line starts with a dash on a pixel centre of the first column.
    starts = (out[:, :, 0] == 255).sum(axis=1)
    assert ((starts >= 1) & (starts <= severity)).all()
    assert (out >= before).all()  # the lines of the severity below, and more
    before = out
  one = corruptions.dotted_line(black, 1, 9)[..., 0]
  assert ((one[:, :, 0] == 255).sum(axis=1) == 1).all()
  # Dashes and gaps: the line crosses every column, some of them only in a gap.
  assert 0.3 < (one == 255).any(axis=1).mean() < 0.9
  digits = _digits()[:8]
  for severity in corruptions.SEVERITIES:
    assert (corruptions.dotted_line(digits, severity, 1) >= digits).all()


def test_zigzag_vertices_on_a_hand_line():
  vertices = corruptions._zigzag_vertices(np.array([[5.0, 0.0]]), np.array([[5.0, 8.0]]), 9)
  np.testing.assert_allclose(vertices[0], [[5, 0], [7, 2], [5, 4], [3, 6], [5, 8]], atol=1e-12)
  cover = np.zeros((9, 9))
  for k in range(4):
    cover = np.maximum(cover, corruptions._stroke(9, 9, vertices[:, k], vertices[:, k + 1])[0])
  path = ([5, 6, 7, 6, 5, 4, 3, 4, 5], list(range(9)))
  assert (cover[path] == 1).all()
  assert cover[8, 2] == 0.5  # one pixel below the lower peak
  assert cover[:2].sum() == 0  # two or more above the upper one


@pytest.mark.parametrize('height', [28, 6])
def test_zigzag_crosses_every_column_between_its_ends_inside_the_image(height):
  black = np.zeros((16, height, 28, 3), dtype=np.uint8)
  out = corruptions.zigzag(black, 1, 4)[..., 0]
  # Every column from 2 to 25 holds a pixel centre of the line, peaks included: the
  # line keeps its peaks inside even on a 6-row image.
  assert (out == 255)[:, :, 2:26].any(axis=1).all()
  assert not (out[:, :, [0, 27]] > 128).any()
  assert (corruptions.zigzag(black, 5, 4) >= corruptions.zigzag(black, 4, 4)).all()


# -----------------------------------------------------------------------------
# Edges.


def test_canny_finds_one_line_at_a_step_and_nothing_in_flat_regions():
  step = np.zeros((1, 10, 10, 1), dtype=np.uint8)
  step[:, :, 5:] = 255
  expected = np.zeros((10, 10), dtype=bool)
  expected[:, 5] = True  # the later column of the tie at the step
  np.testing.assert_array_equal(corruptions.canny(step)[0], expected)
  np.testing.assert_array_equal(corruptions.canny(255 - step)[0], expected)
  np.testing.assert_array_equal(corruptions.canny(np.swapaxes(step, 1, 2))[0], expected.T)
  assert not corruptions.canny(_filled((2, 10, 10, 3), 90)).any()
  rgb = np.repeat(step, 3, axis=3)
  np.testing.assert_array_equal(corruptions.canny(rgb)[0], expected)


def test_canny_thresholds_and_hysteresis():
  # Sobel magnitude at a step of h grey levels is about 2.56 h / 255 after the blur:
  # 15 levels lie between the low (0.1) and high (0.2) thresholds, 30 above the high one.
  weak = np.zeros((1, 12, 12, 1), dtype=np.uint8)
  weak[:, :, 6:] = 15
  assert not corruptions.canny(weak).any()
  joined = weak.copy()
  joined[:, :2, 6:] = 30  # a strong stretch at the top of the same edge
  edges = corruptions.canny(joined)[0]
  assert edges[:, 6].all() and edges.sum() == 12  # the weak part is kept through the chain
  faint = np.zeros((1, 12, 12, 1), dtype=np.uint8)
  faint[:, :, 6:] = 5
  assert not corruptions.canny(faint, low=0.0, high=0.1).any()
  assert corruptions.canny(faint, low=0.0, high=0.01)[0, :, 6].all()


def test_canny_edges_fades_the_image_into_its_edge_map():
  step = np.zeros((1, 10, 10, 3), dtype=np.uint8)
  step[:, :, 5:] = 255
  for severity, mix in zip(corruptions.SEVERITIES, corruptions.CANNY_MIX):
    out = corruptions.canny_edges(step, severity)[0, :, :, 0]
    assert (out[:, :5] == 0).all() and (out[:, 5] == 255).all()
    assert (out[:, 6:] == np.rint(255 * (1 - mix))).all()
