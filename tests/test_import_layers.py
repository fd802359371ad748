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
    'configs': ('glow_ood.experiment', 'glow_ood.score_files', 'glow_ood.evaluate', 'glow_ood.train'),
    'flows': ('glow_ood.experiment', 'glow_ood.scores', 'glow_ood.score_files', 'glow_ood.models',
              'glow_ood.evaluate', 'glow_ood.train'),
    'models': ('glow_ood.experiment', 'glow_ood.scores', 'glow_ood.score_files',
               'glow_ood.evaluate', 'glow_ood.train'),
    'scores': ('glow_ood.experiment', 'glow_ood.score_files', 'glow_ood.evaluate', 'glow_ood.train'),
    'model_kinds.py': ('glow_ood.scores', 'glow_ood.score_files', 'glow_ood.experiment'),
    'evaluate.py': ('glow_ood.score_files', 'glow_ood.experiment'),
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
                    '  from glow_ood import score_files\n'
                    '  import glow_ood.experiment.report\n')
  assert {'glow_ood.score_files', 'glow_ood.experiment.report', 'os'} <= imported_modules(source)


def module_graph(package: pathlib.Path) -> dict[str, set[str]]:
  """Module -> the package's modules it imports (lazy imports included).

  `from pkg import name` counts as importing pkg.name where that is a module (a
  package's own __init__ importing its submodules is not a cycle of them).
  """
  modules = {}
  for path in package.rglob('*.py'):
    parts = path.relative_to(package.parent).with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        deps.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        submodules = [f'{node.module}.{alias.name}' for alias in node.names]
        found = [m for m in submodules if m in modules]
        deps.update(found)
        if len(found) < len(submodules):  # names defined in node.module itself
          deps.add(node.module)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan, iterative)."""
  index, low, on_stack, stack, found = {}, {}, set(), [], []
  for root in graph:
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          found.append(sorted(component))
  return found


def test_no_import_cycles():
  found = cycles(module_graph(PACKAGE))
  assert not found, 'import cycles: ' + '; '.join(' <-> '.join(c) for c in found)


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path):
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('from pkg import a\n')
  (package / 'a.py').write_text('from pkg.sub import b\n')
  (package / 'sub' / '__init__.py').write_text('')
  (package / 'sub' / 'b.py').write_text('def f():\n  import pkg.c\n')
  (package / 'c.py').write_text('from pkg import a\nfrom pkg.sub import b\n')
  assert cycles(module_graph(package)) == [['pkg.a', 'pkg.c', 'pkg.sub.b']]
  (package / 'sub' / 'b.py').write_text('import os\n')
  assert cycles(module_graph(package)) == []
