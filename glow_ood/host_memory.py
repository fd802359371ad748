"""Keeps the memory of XLA's CPU temporaries mapped from one step to the next.

Each run of a compiled program on XLA's CPU backend takes one block for all its
temporaries (250 MiB for the quick model's train step) and frees it at the end.
glibc hands blocks that large back to the kernel (munmap) and takes fresh pages
for the next run, which the kernel must map and zero again on first touch: the
quick train step took 65,000 page faults a step, and as much system time as its
arithmetic (README, Performance). With `keep`, glibc serves every block from its
main heap and never trims it, so the next step reuses the same pages.

This is a process-wide setting of the C allocator (glibc's mallopt: one arena,
no mmap for large blocks, no trimming). It must be made before JAX starts its
CPU backend, whose threads otherwise take their own arenas, which cannot hold
blocks over 64 MiB. The cost: memory freed by the process stays mapped to it
(its resident size stays at its peak). On accelerators the temporaries live in
device memory; there `auto` leaves the host allocator alone.

Once the heap has reached its working size (after a first step), the trainer
calls `back_heap_with_huge_pages`: the heap that every step now reuses is
moved to 2 MiB transparent huge pages (Linux madvise, MADV_COLLAPSE where the
kernel has it), which cuts the TLB misses of each step's pass over its
temporaries (1.10x on the quick model's train step, 1.14-1.20x on the L=3 RGB
one; README, Performance). Kernels whose transparent huge pages are off, or
older than 6.1 (no MADV_COLLAPSE), get the advice alone or nothing.
"""

import ctypes
import importlib.util
import os
import platform
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes
# madvise advice values (Linux, asm-generic/mman-common.h).
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25
_HUGE_PAGE = 2**21

# Whether keep_freed_memory_mapped took effect, and the part of the heap already moved
# to huge pages (the heap only grows under it).
_state = {'kept': False, 'huge_end': 0}

CHOICES = ('auto', 'keep', 'release')
FLAG_HELP = ("Host memory of XLA's CPU temporaries: 'keep' maps it once and reuses it every "
             "step (no per-step page faults; the process keeps its peak memory), 'release' "
             "is the C allocator's default, 'auto' keeps when JAX will run on the CPU. "
             'README, Performance.')

# Packages that give JAX an accelerator backend; with one installed, JAX's default
# backend is (normally) not the CPU.
_ACCELERATOR_PLUGINS = ('libtpu', 'jax_cuda12_plugin', 'jax_cuda13_plugin',
                        'jax_rocm60_plugin', 'jax_rocm7_plugin')


def jax_will_run_on_cpu() -> bool:
  """Best guess, before JAX starts, that its default backend will be the CPU.

  JAX_PLATFORMS decides when set; otherwise the CPU unless an accelerator
  plugin (TPU, CUDA, ROCm) is installed.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def jax_backend_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def _glibc():
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  return ctypes.CDLL(None)


def keep_freed_memory_mapped() -> bool:
  """Makes glibc reuse freed large blocks instead of unmapping them. True when applied.

  False (and nothing changes) where the C library is not glibc. Raises
  RuntimeError once JAX has started a backend: its threads already have their
  own arenas then, and the setting would not reach them.
  """
  if jax_backend_started():
    raise RuntimeError('Host memory reuse must be set before JAX starts its backends (first '
                       'thing in the process, before any JAX array or device query).')
  libc = _glibc()
  if libc is None:
    return False
  # One arena: worker threads' arenas are capped at 64 MiB heaps, so their large
  # blocks would be mmapped whatever the other settings say.
  _state['kept'] = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  return _state['kept']


def heap_range() -> tuple[int, int] | None:
  """[start, end) of the process's brk heap (/proc/self/maps), or None.

  The heap can show as several adjacent mappings (advice given to part of it, e.g.
  by numpy for its large arrays, splits it); the range spans them all.
  """
  spans = []
  try:
    with open('/proc/self/maps') as f:
      for line in f:
        if line.rstrip().endswith('[heap]'):
          start, end = line.split()[0].split('-')
          spans.append((int(start, 16), int(end, 16)))
  except OSError:
    return None
  return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None


def back_heap_with_huge_pages() -> int:
  """Moves the heap grown since the last call to transparent huge pages; MiB advised.

  Does nothing (returns 0) unless host memory is kept (`apply` returned True): only
  then does every step reuse the same heap. Cheap when the heap has not grown, so
  callers may call it at every logging step. The kernel decides what it honours
  (MADV_COLLAPSE moves the pages now where it exists; otherwise the advice lets the
  kernel's background thread do it).
  """
  if not _state['kept']:
    return 0
  heap = heap_range()
  if heap is None:
    return 0
  start = max(heap[0], _state['huge_end'])
  start = -(-start // _HUGE_PAGE) * _HUGE_PAGE  # whole huge pages only
  end = heap[1] // _HUGE_PAGE * _HUGE_PAGE
  if end <= start:
    return 0
  libc = _glibc()
  libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  if libc.madvise(start, end - start, _MADV_HUGEPAGE) != 0:
    return 0  # transparent huge pages disabled (or not in this kernel)
  libc.madvise(start, end - start, _MADV_COLLAPSE)  # best effort: may be absent or partial
  _state['huge_end'] = end
  return (end - start) >> 20


def apply(choice: str) -> bool:
  """Applies a --host_memory choice (CHOICES). True when memory reuse is now on.

  'auto' is best effort: once JAX has started it changes nothing; 'keep' then raises.
  """
  if choice not in CHOICES:
    raise ValueError(f'host memory must be one of {", ".join(CHOICES)}, got {choice!r}.')
  if choice == 'release' or (choice == 'auto' and not jax_will_run_on_cpu()):
    return False
  if choice == 'auto' and jax_backend_started():
    return False  # too late to reach JAX's threads (e.g. the launcher called in-process)
  return keep_freed_memory_mapped()
