"""The package's imports run one way: configs and layers below, experiments on top.

Read from the source (no import executed), so a new upward import fails here whether
or not it happens to be imported lazily inside a function.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'glow_ood'

# module (or package) -> modules it must never import, directly or inside a function.
FORBIDDEN = {
    'configs': ('glow_ood.experiment', 'glow_ood.scoring', 'glow_ood.evaluate', 'glow_ood.train'),
    'flows': ('glow_ood.experiment', 'glow_ood.scores', 'glow_ood.scoring', 'glow_ood.models',
              'glow_ood.evaluate', 'glow_ood.train'),
    'models': ('glow_ood.experiment', 'glow_ood.scores', 'glow_ood.scoring',
               'glow_ood.evaluate', 'glow_ood.train'),
    'scores': ('glow_ood.experiment', 'glow_ood.scoring', 'glow_ood.evaluate', 'glow_ood.train'),
    'model_kinds.py': ('glow_ood.scores', 'glow_ood.scoring', 'glow_ood.experiment'),
    'evaluate.py': ('glow_ood.scoring', 'glow_ood.experiment'),
    'user_errors.py': ('glow_ood.config_validation', 'flax', 'jax'),
}


def imported_modules(path: pathlib.Path) -> set[str]:
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
      out.update(f'{node.module}.{alias.name}' for alias in node.names)
  return out


def _files(name: str) -> list[pathlib.Path]:
  target = PACKAGE / name
  return sorted(target.rglob('*.py')) if target.is_dir() else [target]


@pytest.mark.parametrize('name', sorted(FORBIDDEN))
def test_no_import_runs_back_up(name):
  files = _files(name)
  assert files, f'{name} not found under {PACKAGE}'
  upward = []
  for path in files:
    for module in imported_modules(path):
      if any(module == f or module.startswith(f + '.') for f in FORBIDDEN[name]):
        upward.append(f'{path.relative_to(PACKAGE.parent)} imports {module}')
  assert not upward, '\n'.join(upward)


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
  source = tmp_path / 'm.py'
  source.write_text('import os\n'
                    'def f():\n'
                    '  from glow_ood import scoring\n'
                    '  import glow_ood.experiment.report\n')
  assert {'glow_ood.scoring', 'glow_ood.experiment.report', 'os'} <= imported_modules(source)
