"""--compilation_cache: compiled XLA programs kept on disk and reused across runs and models.

A pair experiment trains a dozen models, several with the same program (a flow's
background candidates, the winner trained on), and every one pays the same compile
(~19 s for the quick Glow's initialisation and train step on 2 CPU cores); a resumed
run pays it again. JAX's persistent cache keys each executable by its HLO, the compile
options, the devices and the JAX/XLA versions, so a hit is the executable the compile
would have produced: results are bit for bit those of a fresh compile.

  auto  <workdir>/compilation_cache, or $JAX_COMPILATION_CACHE_DIR where it is set
  none  no cache (every program compiles)
  PATH  that directory (shared between workdirs: a second pair run reuses the first's)
"""

import os

CHOICES_TEXT = 'auto | none | a directory'
FLAG_HELP = ('Where compiled XLA programs are kept and reused (across the models of a pair '
             'run, and when a run resumes): auto = <workdir>/compilation_cache (or '
             '$JAX_COMPILATION_CACHE_DIR where set), none = compile every program, or a '
             'directory. A hit is the same executable a compile would give.')
DIRECTORY_NAME = 'compilation_cache'
ENV_VARIABLE = 'JAX_COMPILATION_CACHE_DIR'
# Programs that compile faster than this are not written: reading one back would save
# less than it costs (the quick models' evaluation passes take ~1-3 s, the train steps ~10).
# JAX's own $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, where set, wins.
MIN_COMPILE_SECONDS = 0.5
MIN_COMPILE_ENV_VARIABLE = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'


def directory(setting: str, workdir: str | None) -> str | None:
  """The cache directory `setting` names for a run in `workdir` (None: no cache)."""
  if setting == 'none':
    return None
  if setting == 'auto':
    if os.environ.get(ENV_VARIABLE):
      return os.environ[ENV_VARIABLE]
    return os.path.join(workdir, DIRECTORY_NAME) if workdir else None
  if not setting:
    raise ValueError(f'--compilation_cache is empty: give {CHOICES_TEXT}.')
  return setting


def enable(path: str | None) -> None:
  """Points JAX's persistent compilation cache at `path` (None: off). Before the first compile."""
  import jax  # pylint: disable=g-import-not-at-top
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f'--compilation_cache={path} is a file, not a directory: give a directory '
                     '(created if missing), auto or none.')
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  if MIN_COMPILE_ENV_VARIABLE not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
