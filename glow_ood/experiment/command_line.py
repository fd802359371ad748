"""The experiment command's default: --pair and --variant name a config file in glow_ood/configs/pairs/.

Kept apart from experiments/reproduce.py so it can be tested without defining flags.
"""

import os

from glow_ood.configs import pairs

PAIRS_DIR = os.path.dirname(os.path.abspath(pairs.__file__))

def with_default_config(argv: list[str], pairs_dir: str) -> list[str]:
  """Adds --config=<PAIRS_DIR>/<pair>.py:<variant> unless --config is given."""
  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    return argv
  values = {'pair': 'fashion_mnist_to_mnist', 'variant': 'quick'}
  for index, arg in enumerate(argv[1:], start=1):
    for name in values:
      if arg.startswith(f'--{name}='):
        values[name] = arg.split('=', 1)[1]
      elif arg == f'--{name}' and index + 1 < len(argv):
        values[name] = argv[index + 1]
  path = os.path.join(pairs_dir, f'{values["pair"]}.py')
  if not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(pairs_dir)
                   if f.endswith('.py') and f not in ('__init__.py', 'pair_base.py'))
    raise SystemExit(f'Unknown --pair={values["pair"]!r}; known pairs: {", ".join(known)}.')
  return [argv[0], f'--config={path}:{values["variant"]}'] + argv[1:]
