"""Test-wide settings. Set before JAX is imported by any test module."""

import os
import shutil
import tempfile

import pytest

from glow_ood import host_memory

# As the launchers do on a CPU-only machine: XLA's per-run temporaries reuse mapped
# memory instead of page-faulting fresh pages on every call (README, Performance).
host_memory.apply('auto')

# The suite runs tiny models where XLA's compile time dominates the run time;
# skipping most optimisations keeps it fast without changing results beyond
# float rounding. Export JAX_DISABLE_MOST_OPTIMIZATIONS=False to test optimised code.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'True')
# XLA:CPU's loop emitters compile a tiny Glow's gradient 2.4x faster than its fusion
# emitters (the default); the tests' programs are compile-bound, not run-bound.
if '--xla_cpu_use_fusion_emitters' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_cpu_use_fusion_emitters=false').strip()

# One persistent compilation cache for the whole session, subprocesses included (they
# inherit the environment): the suite compiles the same tiny programs many times over
# (a run, its killed twin and the resumption; a model and its ensemble seed).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix='glow_ood_test_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE_DIR
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
else:
  _CACHE_DIR = None


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE_DIR is not None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture
def tfds_read_up_front(monkeypatch):
  """Reads TFDS splits once under tfds.testing.mock_data, then serves them from memory.

  mock_data swaps the file-system API for a temporary tree while a dataset is
  being built; orbax's background checkpoint threads running at that moment see
  the swapped API and fail (a race between the mock and the checkpoint
  manager). So the TFDS reading, through the real tfds_source code, happens
  before training; training and evaluation then run without the mock.
  Returns prefetch(specs_and_splits, num_examples), which reads the given
  (DataSpec, split) pairs under mock_data.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from glow_ood.data import tfds_source  # pylint: disable=g-import-not-at-top
  original = tfds_source.load_tfds_images
  cache = {}

  def cached(name, split, *, data_dir, preprocess, max_examples=None, process_index=0,
             process_count=1):
    assert process_count == 1 and process_index == 0
    # 'report' collects what preprocessing did; it is not part of what is read.
    key = (name, split, data_dir,
           tuple(sorted((k, v) for k, v in preprocess.keywords.items() if k != 'report')))
    if key not in cache:
      cache[key] = original(name, split, data_dir=data_dir, preprocess=preprocess)
    images = cache[key]
    return images[:max_examples] if max_examples else images

  monkeypatch.setattr(tfds_source, 'load_tfds_images', cached)

  def prefetch(specs_and_splits, num_examples):
    from glow_ood import data  # pylint: disable=g-import-not-at-top
    with tfds.testing.mock_data(num_examples=num_examples):
      for spec, split in specs_and_splits:
        data.load_array(spec, split)
  return prefetch


@pytest.fixture(scope='module', autouse=True)
def release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  Eager (un-jitted) calls of the scanned Glow compile a program per call; hundreds of
  test modules' worth of them in one process exhausted XLA:CPU's memory mappings and
  crashed the interpreter. Each module starts from an empty cache instead.
  """
  yield
  import jax  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
