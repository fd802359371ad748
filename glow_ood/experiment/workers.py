"""The pair's models side by side, one worker process per group of cores (CPU-only hosts).

    plan = workers.plan(requested, models, argv)    # None: run every model in this process
    chains = workers.run(plan, workdir, while_waiting, samples_ready)

A model's chain (train and evaluate, stress and corruption sets, background and
ensemble members, scores, Section 5, attacks, graying) depends on no other model's,
so on a CPU host the chains can run at once. Two processes pinned to one core each
do 1.2-1.35x the train-step work of one process split into two JAX devices (the
devices' per-step synchronisation and shared thread pool cost more than they give:
docs/performance.md, Run times), and while one process compiles, the other's core
computes. Each worker is the same command line with `--worker_model=<model>`:
it sees the same config and flags, runs that one task pinned to its cores (its CPU
split then follows from its own cores: one device for one core), and leaves its
output in WORKDIR/.workers/ for the parent, which starts the next task in the freed
cores and writes the report. A model's sample grids are a task of their own
(`--worker_task=samples`), taken by a core with no chain left to start once that
model has finished training: PixelCNN++ draws its grids with the whole net once per
pixel, and so draws them beside its own evaluations.

Every file a task writes is the model's own (its workdirs, eval and score files,
figures, samples); the files they share (the compressors' code lengths, the
persistent compilation cache) are written atomically. A worker's output lines reach
the terminal prefixed by its task, and WORKDIR/logs/<task>.log as they are. A worker
that fails stops the others with one SIGINT each (training saves, as on Ctrl-C) and
ends the command with its last line; Ctrl-C reaches the parent alone (workers run in
their own sessions) and is passed on the same way. Each worker's models train on its
own device split, so their numbers differ by round-off from one process split into
devices (README: trained figures move across device splits), never with the schedule;
`--workers=1` runs the chains one after another in this process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from glow_ood import atomic_files
from glow_ood import host_memory
from glow_ood import user_errors

WORKER_DIR = '.workers'
LOG_DIR = 'logs'   # each model's worker output, appended run after run
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1   # prctl option: a signal the child gets when its parent dies


@dataclasses.dataclass(frozen=True)
class Plan:
  """argv: the command line each worker repeats (its flags and config overrides);
  core_groups: the cores of each worker slot; models: the chains, in start order."""
  argv: tuple[str, ...]
  core_groups: tuple[tuple[int, ...], ...]
  models: tuple[str, ...]


def usable_core_ids() -> list[int]:
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # no affinity API (macOS): no pinning, no workers
    return []


def core_groups(count: int, cores: Sequence[int]) -> list[tuple[int, ...]]:
  """`cores` cut into `count` contiguous groups, sizes differing by at most one."""
  if not 1 <= count <= len(cores):
    raise ValueError(f'Cannot split {len(cores)} cores into {count} worker groups.')
  size, extra = divmod(len(cores), count)
  groups, start = [], 0
  for index in range(count):
    end = start + size + (index < extra)
    groups.append(tuple(cores[start:end]))
    start = end
  return groups


def auto_count(models: Sequence[str], cores: Sequence[int], *, cpu_devices: int,
               xla_flags: str) -> int:
  """--workers=0: one worker per usable core, at most one per model, on a host where JAX will
  run on the CPU and its split is left to the command (--cpu_devices=0, no device count in
  XLA_FLAGS); otherwise 1 (an accelerator runs one model at a time)."""
  if (cpu_devices != 0 or 'xla_force_host_platform_device_count' in xla_flags
      or not host_memory.jax_will_run_on_cpu()):
    return 1
  return max(1, min(len(models), len(cores)))


def plan(requested: int, models: Sequence[str], argv: Sequence[str], *,
         cpu_devices: int = 0, cores: Sequence[int] | None = None,
         xla_flags: str | None = None) -> Plan | None:
  """The worker plan for --workers=`requested` (0: auto_count), or None for one process."""
  cores = usable_core_ids() if cores is None else list(cores)
  xla_flags = os.environ.get('XLA_FLAGS', '') if xla_flags is None else xla_flags
  if requested < 0:
    raise user_errors.ConfigError(f'--workers={requested}: give 0 (automatic) or a count >= 1.')
  count = requested or auto_count(models, cores, cpu_devices=cpu_devices, xla_flags=xla_flags)
  count = min(count, len(models))
  if count <= 1:
    return None
  if count > len(cores):
    raise user_errors.ConfigError(
        f'--workers={requested}: this process may run on {len(cores)} core(s), and each worker '
        f'needs one of its own. Give at most {len(cores)}, or 1 to run the models in turn.')
  return Plan(argv=tuple(argv), core_groups=tuple(core_groups(count, cores)),
              models=tuple(models))


def output_path(workdir: str, model: str, task: str = 'chain') -> str:
  return os.path.join(workdir, WORKER_DIR,
                      f'{model}.pkl' if task == 'chain' else f'{model}.{task}.pkl')


def write_output(path: str, chain: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_files.atomic_write(path, 'wb') as f:
    pickle.dump(chain, f)


def child_argv(argv: Sequence[str], model: str, output: str, cores: Sequence[int],
               task: str = 'chain') -> list[str]:
  """The worker's command: this one, run by this interpreter, for one model's task."""
  return [sys.executable, *argv, '--workers=1', f'--worker_model={model}',
          f'--worker_task={task}', f'--worker_output={output}',
          f'--worker_cores={_cores_text(cores)}']


def become_worker(cores_text: str) -> None:
  """First thing in a worker: run on its cores alone (before JAX sizes its thread pools and
  device split by them), and end if the parent ends (a parent killed outright stops its
  workers). Done here, not between fork and exec: the parent runs JAX's threads."""
  try:
    cores = {int(c) for c in cores_text.split(',')}
  except ValueError:
    raise user_errors.ConfigError(
        f'--worker_cores={cores_text!r}: give core numbers separated by commas.') from None
  os.sched_setaffinity(0, cores)
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
  except (OSError, AttributeError):   # not Linux: the worker may outlive a killed parent
    pass


def log_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, LOG_DIR, f'{name.replace(" ", "_")}.log')


class _Worker:
  """One running chain: its process, the thread echoing its lines (to the terminal, prefixed,
  and to the model's log, appended), its last line."""

  def __init__(self, model: str, cores: tuple[int, ...], argv: list[str], print_lock,
               log: str):
    self.model, self.cores, self.started = model, cores, time.time()
    os.makedirs(os.path.dirname(log), exist_ok=True)
    self._log = open(log, 'a', encoding='utf-8')   # pylint: disable=consider-using-with
    self._log.write(f'== {time.strftime("%Y-%m-%d %H:%M:%S")}: {model} on cores '
                    f'{_cores_text(cores)}: {" ".join(argv)}\n')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    self.process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True, text=True, bufsize=1)
    self.last_line = ''
    self._echo = threading.Thread(target=self._read, args=(print_lock,), daemon=True)
    self._echo.start()

  def _read(self, print_lock) -> None:
    for line in self.process.stdout:
      line = line.rstrip('\n')
      if line.strip():
        self.last_line = line.strip()
      self._log.write(line + '\n')
      with print_lock:
        print(f'[{self.model}] {line}', flush=True)

  def finish(self) -> int:
    code = self.process.wait()
    self._echo.join()
    self._log.close()
    return code

  def interrupt(self) -> None:
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)


TASKS = ('chain', 'samples')


def task_name(model: str, task: str) -> str:
  return model if task == 'chain' else f'{model} {task}'


def run(plan_: Plan, workdir: str, while_waiting: Callable[[], None] | None = None,
        samples_ready: Callable[[str], bool] = lambda model: True) -> dict[str, dict]:
  """Runs every model's chain, and each model's sample grids as a task of their own, in the
  plan's workers; returns {model: chain} in plan order, each chain as its worker wrote it,
  with 'worker': {'cores', 'wall_s'} added and 'samples' (what the sample task wrote).

  Chains start first, in plan order; a slot with no chain left to start takes the sample
  task of a model whose training has finished (samples_ready), so that drawing an
  autoregressive model's grids (PixelCNN++: the net once per pixel) overlaps its chain's
  evaluations. while_waiting: run here once the first workers have started (the parent's
  own share of the work). Raises WorkerFailed (or TrainingInterrupted after Ctrl-C) once
  every worker still running has stopped."""
  for model in plan_.models:   # never read an output an earlier invocation left
    for task in TASKS:
      if os.path.exists(output_path(workdir, model, task)):
        os.remove(output_path(workdir, model, task))
  print(f'Running the {len(plan_.models)} models in {len(plan_.core_groups)} worker '
        f'processes side by side, on cores {", ".join(map(_cores_text, plan_.core_groups))} '
        f'(--workers=1 runs them in turn in this process); each one\'s output is also in '
        f'{os.path.join(workdir, LOG_DIR)}/<model>.log.', flush=True)
  chains_waiting = list(plan_.models)
  samples_waiting = list(plan_.models)
  free = list(plan_.core_groups)
  running: list[_Worker] = []
  outputs: dict[tuple[str, str], dict] = {}
  print_lock = threading.Lock()
  failure: str | None = None
  interrupted = False

  def next_task():
    if chains_waiting:
      return chains_waiting.pop(0), 'chain'
    for model in samples_waiting:
      if samples_ready(model):
        samples_waiting.remove(model)
        return model, 'samples'
    return None

  def start_next():
    while free and failure is None and not interrupted:
      task = next_task()
      if task is None:
        return
      (model, kind), cores = task, free.pop(0)
      running.append(_Worker(task_name(model, kind), cores, child_argv(
          plan_.argv, model, output_path(workdir, model, kind), cores, kind), print_lock,
          log_path(workdir, task_name(model, kind))))
      running[-1].task = (model, kind)

  def stop_all():
    for worker in running:
      worker.interrupt()

  start_next()
  if while_waiting is not None:
    while_waiting()
  while running or (samples_waiting and failure is None and not interrupted):
    try:
      if not running:   # every chain ended, yet a model's samples cannot start
        failure = (f'the sample grids of {", ".join(samples_waiting)}: the model has no '
                   'finished training')
        break
      time.sleep(_POLL_S)
      for worker in [w for w in running if w.process.poll() is not None]:
        running.remove(worker)
        code = worker.finish()
        free.append(worker.cores)
        path = output_path(workdir, *worker.task)
        if code == 0 and os.path.exists(path):
          with open(path, 'rb') as f:
            output = pickle.load(f)
          os.remove(path)
          output['worker'] = {'cores': list(worker.cores), 'started': worker.started,
                              'wall_s': time.time() - worker.started}
          outputs[worker.task] = output
        elif failure is None and not interrupted:
          failure = (f'the {worker.model} worker (cores {_cores_text(worker.cores)}) stopped '
                     f'with exit status {code}: {worker.last_line or "no output"}')
          if code == user_errors.INTERRUPTED_EXIT_STATUS:
            interrupted = True
          stop_all()
      start_next()
    except KeyboardInterrupt:
      if interrupted:   # a second Ctrl-C: stop waiting for the saves
        for worker in running:
          worker.process.kill()
        raise
      interrupted = True
      print('Interrupted: each worker stops, saving its training state if it is training '
            '(Ctrl-C again to stop them at once).', flush=True)
      stop_all()
  if interrupted:
    raise user_errors.TrainingInterrupted(
        'Stopped on request: each worker that was training saved its state first. Rerun the '
        'same command to go on.' if failure is None else failure)
  if failure is not None:
    raise user_errors.WorkerFailed(failure)
  return {model: dict(outputs[model, 'chain'], samples=outputs[model, 'samples'])
          for model in plan_.models}


def _cores_text(cores: Sequence[int]) -> str:
  return ','.join(map(str, cores))
