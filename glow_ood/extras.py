"""Optional dependencies: `pip install glow_ood` brings only the layers' (jax, flax,
numpy); the trainer, data loaders and experiments need `glow_ood[train]`."""

import importlib


def require(extra: str, *modules: str) -> None:
  """Imports `modules`; a missing one raises an ImportError that names the extra."""
  for name in modules:
    try:
      importlib.import_module(name)
    except ImportError as error:
      raise ImportError(
          f'{name} is not installed, and this part of glow_ood needs it. Install the '
          f'[{extra}] extra: pip install "glow_ood[{extra}]" (from a checkout: '
          f'pip install -e ".[{extra}]").') from error
