"""glow_ood.host_memory: per-step page faults of XLA's CPU temporaries, and the choices.

The allocator setting is per process and must come before JAX starts, so the
fault counts are read in fresh subprocesses.
"""

import os
import platform
import re
import subprocess
import sys

import jax
import pytest

from glow_ood import host_memory
from tests.training.conftest import REPO_ROOT, TINY_CONFIG, subprocess_env

# A gradient whose temporaries (112 MiB) are one block above the size glibc always serves
# with mmap; prints the mean minor page faults of a call after warm-up. With reuse, a
# call faults only when heap fragmentation leaves no free block big enough (a few calls
# in the first dozens, then none: the heap stops growing).
_FAULTS_PER_CALL = """
import resource, sys
from glow_ood import host_memory
print(host_memory.apply(sys.argv[1]))
import jax, jax.numpy as jnp
def loss(w, x):
  for _ in range(4):
    x = jax.nn.relu(x @ w)
  return x.sum()
grad = jax.jit(jax.grad(loss))
w, x = jnp.eye(256), jnp.ones((16384, 256))
grad(w, x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
  grad(w, x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 30)
"""


def _faults_per_call(choice: str) -> tuple[str, float]:
  result = subprocess.run([sys.executable, '-c', _FAULTS_PER_CALL, choice], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  applied, faults = result.stdout.split()
  return applied, float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='the setting is glibc-only')
def test_keep_reuses_the_temporaries_pages_and_release_faults_them_in_every_call():
  applied, released = _faults_per_call('release')
  assert applied == 'False'
  # 112 MiB of temporaries are 28,000 fresh 4 KiB pages a call under the default.
  assert released > 20_000
  applied, kept = _faults_per_call('keep')
  assert applied == 'True'
  assert kept < released / 4


# A 96 MiB block, touched and freed, then the heap moved to huge pages; prints the MiB
# advised by the first and the second call and the process's anonymous huge pages (KiB).
_HUGE_PAGES = """
import sys
import numpy as np
from glow_ood import host_memory
host_memory.apply(sys.argv[1])
block = np.ones(96 * 2**20, np.uint8)  # from the heap under keep (no mmap)
del block
first = host_memory.back_heap_with_huge_pages()
second = host_memory.back_heap_with_huge_pages()  # nothing grew since
with open('/proc/self/smaps_rollup') as f:
  huge = [int(l.split()[1]) for l in f if l.startswith('AnonHugePages')]
print(first, second, huge[0] if huge else -1)
"""


def _transparent_huge_pages() -> str:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return f.read().split('[')[1].split(']')[0]
  except (OSError, IndexError):
    return 'absent'


def _huge_pages(choice: str) -> list[int]:
  result = subprocess.run([sys.executable, '-c', _HUGE_PAGES, choice], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  return [int(v) for v in result.stdout.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc' or _transparent_huge_pages()
                    not in ('always', 'madvise'),
                    reason='needs glibc and transparent huge pages (always or madvise)')
def test_kept_heap_moves_to_huge_pages_once_and_released_memory_is_left_alone():
  first, second, huge_kib = _huge_pages('keep')
  assert first >= 90  # the freed block stays in the heap, and the heap is advised
  assert second == 0  # only growth is advised again
  major, minor = (int(v) for v in re.match(r'(\d+)\.(\d+)', os.uname().release).groups())
  if (major, minor) >= (6, 1):  # MADV_COLLAPSE: moved right away
    assert huge_kib >= 80 * 1024
  assert _huge_pages('release')[:2] == [0, 0]


@pytest.mark.parametrize('platforms, expected', [
    ('cpu', True), ('tpu', False), ('cuda,cpu', False), (' cpu , cuda', True)])
def test_auto_follows_jax_platforms(monkeypatch, platforms, expected):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  assert host_memory.jax_will_run_on_cpu() is expected


def test_auto_without_jax_platforms_looks_for_accelerator_plugins(monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  found = {'libtpu'}
  monkeypatch.setattr(host_memory.importlib.util, 'find_spec',
                      lambda name: object() if name in found else None)
  assert not host_memory.jax_will_run_on_cpu()
  found.clear()
  assert host_memory.jax_will_run_on_cpu()


def test_release_auto_off_cpu_and_auto_after_jax_started_change_nothing(monkeypatch):
  jax.devices()  # the backend has started: a real attempt would raise
  assert host_memory.apply('release') is False
  assert host_memory.apply('auto') is False  # too late: best effort, no error
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  assert host_memory.apply('auto') is False


def test_keep_after_jax_started_and_unknown_choices_raise():
  jax.devices()
  with pytest.raises(RuntimeError, match='before JAX starts'):
    host_memory.apply('keep')
  with pytest.raises(ValueError, match='auto, keep, release'):
    host_memory.apply('always')


def test_main_rejects_an_unknown_host_memory_choice_in_one_line():
  result = subprocess.run([sys.executable, '-m', 'glow_ood.main', f'--config={TINY_CONFIG}',
                           '--workdir=/nonexistent/w', '--host_memory=always'], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'host_memory' in result.stderr and 'keep' in result.stderr
  assert 'Traceback' not in result.stderr
