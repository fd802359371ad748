"""The experiment command's default: --pair and --variant name a config file in glow_ood/configs/pairs/.

Kept apart from experiments/reproduce.py so it can be tested without defining flags.
"""

import os

from glow_ood import argv as argv_lib
from glow_ood.configs import pairs

PAIRS_DIR = os.path.dirname(os.path.abspath(pairs.__file__))
DEFAULT_PAIR = 'fashion_mnist_to_mnist'
DEFAULT_VARIANT = 'quick'

def with_default_config(argv: list[str], pairs_dir: str) -> list[str]:
  """Adds --config=<pairs_dir>/<--pair>.py:<--variant> unless --config is given."""
  pair = argv_lib.flag_value(argv, 'pair') or DEFAULT_PAIR
  variant = argv_lib.flag_value(argv, 'variant') or DEFAULT_VARIANT
  path = os.path.join(pairs_dir, f'{pair}.py')
  if argv_lib.flag_value(argv, 'config') is None and not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(pairs_dir)
                   if f.endswith('.py') and f not in ('__init__.py', 'pair_base.py'))
    raise SystemExit(f'Unknown --pair={pair!r}; known pairs: {", ".join(known)}.')
  return argv_lib.with_config(argv, f'{path}:{variant}')
