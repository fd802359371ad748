"""The flags both commands share, defined once: the launcher (glow_ood.main) and the
experiment command (experiments/reproduce.py).

  launch_flags.define('a model's')       # at import, beside the command's own flags
  launch_flags.apply_before_jax(config, workdir)   # first thing in main(): before JAX starts
"""

import os

from absl import flags

from glow_ood import compilation_cache
from glow_ood import host_memory
from glow_ood import parallel
from glow_ood import user_errors

FLAGS = flags.FLAGS
# 0: one JAX CPU device per usable core (fewer where a batch would not divide). Measured
# faster than one device for every model kind's train step and evaluation (README,
# Performance; docs/performance.md).
DEFAULT_CPU_DEVICES = 0


def define(whose_checkpoint: str) -> None:
  """--cpu_devices, --host_memory, --compilation_cache, --debug and --on_damaged_checkpoint.

  whose_checkpoint: how the damaged-checkpoint help names it ("the", "a model's").
  """
  flags.DEFINE_integer('cpu_devices', DEFAULT_CPU_DEVICES,
                       'Split the host CPU into this many JAX devices: the data-parallel step '
                       'then runs one batch shard per device. 0 = one per usable core, fewer '
                       'until every batch size of the config divides by it. Ignored by '
                       'accelerators.', lower_bound=0)
  flags.DEFINE_enum('host_memory', 'auto', host_memory.CHOICES, host_memory.FLAG_HELP)
  flags.DEFINE_string('compilation_cache', 'auto', compilation_cache.FLAG_HELP)
  flags.DEFINE_bool('debug', False, 'Show the traceback of an expected failure (bad config, '
                    'data, workdir or checkpoint) instead of its one-line message.')
  flags.DEFINE_enum('on_damaged_checkpoint', 'stop', ['stop', 'fallback'],
                    f'When {whose_checkpoint} newest checkpoint differs from its checksums: '
                    'stop (say which files differ and how to go on) or fallback (keep it '
                    'aside as <step>.damaged and go on from the newest intact checkpoint).')


def apply_before_jax(config=None, workdir: str | None = None) -> int:
  """--host_memory, --cpu_devices and --compilation_cache, which must take effect before JAX
  starts its backend and compiles; returns the CPU device count chosen (printed when it is
  not 1). `config` (the parsed --config) gives the batch sizes that --cpu_devices=0 must
  divide; `workdir` holds the cache under --compilation_cache=auto. A bad --cpu_devices or
  --compilation_cache ends the command with one line."""
  host_memory.apply(FLAGS.host_memory)
  try:
    compilation_cache.enable(compilation_cache.directory(FLAGS.compilation_cache, workdir))
  except ValueError as error:
    user_errors.exit_with_message(user_errors.ConfigError(str(error)))
  count = FLAGS.cpu_devices
  if count == 0:
    count = auto_cpu_devices(config)
    if count > 1:
      print(f'CPU split into {count} JAX devices (--cpu_devices=0: one per usable core, '
            f'{parallel.usable_cores()} here, that every batch size divides by)', flush=True)
  elif count > 1:
    print(f'CPU split into {count} JAX devices (--cpu_devices={count})', flush=True)
  try:
    parallel.split_cpu_into_devices(count)
  except (ValueError, RuntimeError) as error:
    user_errors.exit_with_message(user_errors.ConfigError(f'--cpu_devices: {error}'))
  return count


def auto_cpu_devices(config) -> int:
  """--cpu_devices=0: one device per usable core that every batch size of `config` divides
  by; 1 (leave JAX's CPU as it is) where the split would not apply: an accelerator will run
  the program, XLA_FLAGS already sets a device count, or JAX has already started."""
  if (not host_memory.jax_will_run_on_cpu() or host_memory.jax_backend_started()
      or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')):
    return 1
  return parallel.auto_cpu_devices(parallel.config_batch_sizes(config or {}))
