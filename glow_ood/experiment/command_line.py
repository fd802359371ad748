"""The experiment command's default: --pair and --variant name a config file in glow_ood/configs/pairs/.

Kept apart from experiments/reproduce.py so it can be tested without defining flags.
"""

import importlib.util
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
  given = argv_lib.flag_value(argv, 'config')
  if given is None and not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(pairs_dir)
                   if f.endswith('.py') and f not in ('__init__.py', 'pair_base.py'))
    raise SystemExit(f'Unknown --pair={pair!r}; known pairs: {", ".join(known)}.')
  if given is not None:
    config_file, _, variant = given.partition(':')
    in_pairs = os.path.isfile(config_file) and os.path.samefile(
        os.path.dirname(os.path.abspath(config_file)), pairs_dir)
    if not variant or not in_pairs:
      return list(argv)   # not a pair file, or no variant: the config file decides
  from glow_ood.configs.pairs import pair_base  # pylint: disable=g-import-not-at-top
  if variant not in pair_base.VARIANTS:
    flag = '--variant' if given is None else '--config=...:<variant>'
    raise SystemExit(f'Unknown {flag} {variant!r}; choose one of '
                     f'{", ".join(pair_base.VARIANTS)} (e.g. --variant=quick).')
  return argv_lib.with_config(argv, f'{path}:{variant}')


def load_config(argv: list[str]):
  """The config that --config names (file[:argument]), loaded without any override; None if
  it cannot be loaded (absl then reports why)."""
  given = argv_lib.flag_value(argv, 'config')
  if given is None:
    return None
  path, _, argument = given.partition(':')
  try:
    spec = importlib.util.spec_from_file_location('_pair_config_for_message', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None


def unknown_override_message(argv: list[str], config=None) -> str | None:
  """Names the first --config.<key> override that the pair config (default: the one --config
  names) lacks: the block it would go in and the keys that block holds (None if every
  override exists)."""
  from glow_ood import config_validation  # pylint: disable=g-import-not-at-top
  config = load_config(argv) if config is None else config
  if config is None:
    return None
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    renamed = config_validation.RENAMED_KEYS.get('.'.join(path[1:3]))
    if renamed and path[0] in config:
      return (f'config.{".".join(path)} in {arg} has been replaced: use '
              f'config.{path[0]}.{renamed.removeprefix("config.")}.')
    node, walked = config, []
    for part in path:
      if not hasattr(node, 'keys'):
        return (f'Unknown config key {".".join(path)!r} in {arg}: '
                f'config.{".".join(walked)} is a value, not a block.')
      if part not in node:
        block = f'config.{".".join(walked)}' if walked else 'the config'
        keys = ', '.join(sorted(node.keys()))
        return (f'Unknown config key {".".join(path)!r} in {arg}: {block} has no key '
                f'{part!r}; its keys: {keys}.')
      node, walked = node[part], walked + [part]
  return None
