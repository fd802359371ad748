"""The README's usage snippet runs as written, so it cannot rot."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
MARKER = '<!-- tested snippet -->'


def _tested_snippets():
  text = README.read_text()
  blocks = re.findall(re.escape(MARKER) + r'\s*```python\n(.*?)```', text, flags=re.S)
  return blocks


def test_readme_has_the_import_snippet():
  blocks = _tested_snippets()
  assert blocks, f'README.md has no python block after {MARKER!r}'
  assert any('from glow_ood.flows import' in b for b in blocks)


def test_readme_snippets_run():
  for block in _tested_snippets():
    exec(compile(block, str(README), 'exec'), {'__name__': 'readme_snippet'})
