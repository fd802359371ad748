"""The flags both commands share, defined once: the launcher (glow_ood.main) and the
experiment command (experiments/reproduce.py).

  launch_flags.define('a model's')       # at import, beside the command's own flags
  launch_flags.apply_before_jax()        # first thing in main(): before JAX starts
"""

from absl import flags

from glow_ood import host_memory
from glow_ood import parallel
from glow_ood import user_errors

FLAGS = flags.FLAGS


def define(whose_checkpoint: str) -> None:
  """--cpu_devices, --host_memory, --debug and --on_damaged_checkpoint.

  whose_checkpoint: how the damaged-checkpoint help names it ("the", "a model's").
  """
  flags.DEFINE_integer('cpu_devices', 1, 'Split the host CPU into this many JAX devices, '
                       'normally one per core: the data-parallel step then runs one batch '
                       'shard per core. Batch sizes must divide by it. Ignored by '
                       'accelerators.')
  flags.DEFINE_enum('host_memory', 'auto', host_memory.CHOICES, host_memory.FLAG_HELP)
  flags.DEFINE_bool('debug', False, 'Show the traceback of an expected failure (bad config, '
                    'data, workdir or checkpoint) instead of its one-line message.')
  flags.DEFINE_enum('on_damaged_checkpoint', 'stop', ['stop', 'fallback'],
                    f'When {whose_checkpoint} newest checkpoint differs from its checksums: '
                    'stop (say which files differ and how to go on) or fallback (keep it '
                    'aside as <step>.damaged and go on from the newest intact checkpoint).')


def apply_before_jax() -> None:
  """--host_memory and --cpu_devices, which must take effect before JAX starts its backend;
  a bad --cpu_devices ends the command with one line."""
  host_memory.apply(FLAGS.host_memory)
  try:
    parallel.split_cpu_into_devices(FLAGS.cpu_devices)
  except (ValueError, RuntimeError) as error:
    user_errors.exit_with_message(user_errors.ConfigError(f'--cpu_devices: {error}'))
