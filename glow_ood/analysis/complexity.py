"""Lossless code lengths of images, the complexity term of the input-complexity score.

Serra et al. (2020) correct a likelihood model's OOD score by the length L(x)
of x under a generic lossless compressor, in bits per dimension. Compressors:

- 'png': PNG through Pillow, zlib level 9 with the encoder's optimize pass
  (adaptive per-row filters; the pixels still decode exactly).
- 'jpeg2000': lossless JPEG 2000 through Pillow (reversible 5/3 wavelet,
  irreversible=False, no quality layers), written as a bare J2K codestream
  without the JP2 box wrapper. RGB uses the reversible colour transform
  (mct=1), which decorrelates the channels and is itself lossless. Needs a
  Pillow built with OpenJPEG.
- 'zlib': raw DEFLATE (level 9, no zlib header or checksum) of the pixel
  bytes in H, W, C order: a reference with no container.

Container overhead. PNG and J2K files carry headers whose size depends only on
the image shape (PNG: 57 bytes of signature and chunk framing plus 6 of zlib
framing). A per-image constant leaves AUROC unchanged but shifts bits/dim.
`header_bits` measures it as the code length of the all-zero image of that
shape, the least informative content; that slightly over-counts the pure
container, since even a blank image needs a few bytes of coded data. Lengths
minus `header_bits` are therefore about 0 for any constant image, and can dip a
few bytes below it (JPEG 2000 codes some constant levels shorter than 0).
"""

from __future__ import annotations

import functools
import io
import zlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image, features


def _check_images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'expected uint8 images [N, H, W, C] with C in (1, 3), got {images.dtype} {images.shape}')
  return images


def _to_pil(image_hwc: np.ndarray) -> Image.Image:
  # A 2-D uint8 array becomes mode 'L', an [H, W, 3] one mode 'RGB'.
  return Image.fromarray(image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc)


def _png_bytes(image_hwc: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  _to_pil(image_hwc).save(buffer, format='PNG', compress_level=9, optimize=True)
  return buffer.getvalue()


def _jpeg2000_bytes(image_hwc: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  _to_pil(image_hwc).save(
      buffer, format='JPEG2000', irreversible=False, no_jp2=True, mct=int(image_hwc.shape[-1] == 3))
  return buffer.getvalue()


def _zlib_bytes(image_hwc: np.ndarray) -> bytes:
  raw_deflate = zlib.compressobj(level=9, wbits=-15)
  return raw_deflate.compress(image_hwc.tobytes()) + raw_deflate.flush()


_ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    'png': _png_bytes,
    'jpeg2000': _jpeg2000_bytes,
    'zlib': _zlib_bytes,
}


@functools.cache
def _is_available(compressor: str) -> bool:
  return compressor != 'jpeg2000' or bool(features.check('jpg_2000'))


def available_compressors() -> list[str]:
  """Names `code_length_bits` accepts with the installed Pillow."""
  return [name for name in _ENCODERS if _is_available(name)]


def _check_compressor(compressor: str) -> Callable[[np.ndarray], bytes]:
  if compressor not in _ENCODERS:
    raise ValueError(f'unknown compressor {compressor!r}; available: {available_compressors()}')
  if not _is_available(compressor):
    raise ValueError(
        f"compressor {compressor!r} needs Pillow's JPEG 2000 support (OpenJPEG), which the "
        f'installed Pillow {Image.__version__} lacks; available: {available_compressors()}')
  return _ENCODERS[compressor]


def encode(image_hwc: np.ndarray, compressor: str = 'png') -> bytes:
  """The compressed bytes of one uint8 image [H, W, C], the stream `code_length_bits` counts."""
  encoder = _check_compressor(compressor)
  return encoder(_check_images(np.asarray(image_hwc)[None])[0])


def code_length_bits(images: np.ndarray, compressor: str = 'png') -> np.ndarray:
  """Compressed length in bits of each uint8 image [N, H, W, C], headers included: [N] float64."""
  encoder = _check_compressor(compressor)
  images = _check_images(images)
  return np.array([8 * len(encoder(image)) for image in images], dtype=np.float64)


def header_bits(compressor: str, shape: Sequence[int]) -> float:
  """Code length of the all-zero image of `shape` (H, W, C): the fixed cost per image, an upper bound on the container."""
  blank = np.zeros((1, *shape), dtype=np.uint8)
  return float(code_length_bits(blank, compressor)[0])


def bits_per_dim(images: np.ndarray, compressor: str = 'png', subtract_header: bool = False) -> np.ndarray:
  """code_length_bits / (H * W * C), optionally after subtracting `header_bits`: [N] float64."""
  images = _check_images(images)
  bits = code_length_bits(images, compressor)
  if subtract_header:
    bits = bits - header_bits(compressor, images.shape[1:])
  return bits / np.prod(images.shape[1:])
