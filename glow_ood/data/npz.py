"""Images from an .npz file: uint8 arrays 'train'/'test' (or 'x_train'/'x_test').

Arrays may be NHW (grey) or NHWC with C in {1, 3}. Anything else raises
DataUnavailableError: the file exists but cannot serve as image data.
"""

from __future__ import annotations

import zipfile

import numpy as np

from glow_ood.data.errors import unavailable


def array_keys(split: str) -> tuple[str, str]:
  return split, f'x_{split}'


def load_npz_images(path: str, split: str) -> np.ndarray:
  """uint8 [N, H, W, C] images of a split from the .npz file at path."""
  keys = array_keys(split)
  try:
    with np.load(path, allow_pickle=False) as archive:
      key = next((k for k in keys if k in archive.files), None)
      if key is None:
        raise unavailable(
            f'{path} has no array for split {split!r}: looked for keys {list(keys)}, '
            f'found {sorted(archive.files)}.', [f'{path}:{k}' for k in keys])
      images = archive[key]
  except FileNotFoundError as err:
    raise unavailable(f'npz file not found: {path}', [path]) from err
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
    raise unavailable(f'{path} is not a readable .npz file ({err}).', [path]) from err

  where = f'{path}:{key}'
  if images.dtype != np.uint8:
    raise unavailable(f'{where} has dtype {images.dtype}; expected uint8 pixels '
                      '(0..255, no bit reduction or scaling).', [where])
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise unavailable(f'{where} has shape {images.shape}; expected [N, H, W] or '
                      '[N, H, W, C] with C in (1, 3).', [where])
  if images.shape[0] == 0:
    raise unavailable(f'{where} holds no images.', [where])
  return images
