"""The one error raised when a data set cannot be had, and the offline options it lists."""

from __future__ import annotations

from collections.abc import Iterable

# Standard places where Debian packages put real offline copies.
FASHION_MNIST_IDX_DIR = '/usr/share/datasets/fashion-mnist'
MNIST_DIGITS_PNG = '/usr/share/doc/opencv-doc/examples/data/digits.png'
FONTS_DIR = '/usr/share/fonts'

FONT_PACKAGES = ('fonts-dejavu-core', 'fonts-dejavu-extra', 'fonts-liberation',
                 'fonts-freefont-ttf', 'fonts-urw-base35', 'fonts-mathjax')

OFFLINE_OPTIONS = (
    f'fashion_mnist: the 70,000 original IDX files in {FASHION_MNIST_IDX_DIR} '
    '(apt-get install dataset-fashion-mnist), or path=<dir of IDX files>',
    f'mnist: 5,000 digits (split "test" only) from {MNIST_DIGITS_PNG} '
    '(apt-get install opencv-doc), or path=<dir of MNIST IDX files>',
    f'notmnist_glyphs: letters A-J rendered from the fonts under {FONTS_DIR} '
    f'(apt-get install {" ".join(FONT_PACKAGES)}), or path=<fonts dir>',
    'npz, or any name: path=<file.npz> holding uint8 arrays train/test '
    '(or x_train/x_test), NHW or NHWC',
    'cifar10, cifar100, svhn_cropped, celeb_a, imagenet32: TFDS only '
    '(data_dir=<prepared TFDS dir, e.g. gs://...>) or an .npz export',
)


class DataUnavailableError(RuntimeError):
  """A data set cannot be had: no network, missing file, corrupt file, bad npz."""


class TooFewImagesError(DataUnavailableError, ValueError):
  """A split holds fewer images than one training batch (also a ValueError: a bad size)."""


def unavailable(problem: str, looked_for: Iterable[str] = ()) -> DataUnavailableError:
  """Builds the error: what went wrong, what was looked for, the offline options."""
  lines = [problem]
  looked_for = list(looked_for)
  if looked_for:
    lines.append('Looked for:')
    lines.extend(f'  - {item}' for item in looked_for)
  lines.append('Offline options (source="offline"):')
  lines.extend(f'  - {option}' for option in OFFLINE_OPTIONS)
  return DataUnavailableError('\n'.join(lines))
