"""The experiment command's worker processes: the plan, the scheduler, and a pair run in
workers giving exactly the numbers of the same run in one process on one core."""

import json
import os
import subprocess
import sys
import time

import pytest

from glow_ood import user_errors
from glow_ood.experiment import workers
from glow_ood.configs.pairs import pair_base
from tests.experiments.conftest import REPO_ROOT


def test_core_groups_are_contiguous_and_even():
  assert workers.core_groups(2, [0, 1]) == [(0,), (1,)]
  assert workers.core_groups(2, [0, 1, 2, 3, 4]) == [(0, 1, 2), (3, 4)]
  assert workers.core_groups(4, list(range(16))) == [tuple(range(i, i + 4)) for i in (0, 4, 8, 12)]
  with pytest.raises(ValueError, match='3 worker groups'):
    workers.core_groups(3, [0, 1])


def test_auto_count_one_per_core_and_model_on_a_cpu_host_only(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  models = ['glow', 'cv_glow', 'pixelcnn', 'vae']
  auto = lambda cores, **kw: workers.auto_count(models[:kw.pop('m', 4)], list(range(cores)),
                                                **{'cpu_devices': 0, 'xla_flags': '', **kw})
  assert auto(2) == 2 and auto(16) == 4 and auto(3, m=2) == 2 and auto(1) == 1
  # The user chose a device split: it is kept, in one process.
  assert auto(2, cpu_devices=2) == 1
  assert auto(2, xla_flags='--xla_force_host_platform_device_count=2') == 1
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')   # an accelerator runs one model at a time
  assert auto(8) == 1


def test_plan_refuses_more_workers_than_cores_in_one_line():
  models = ['glow', 'vae']
  assert workers.plan(1, models, ['x.py'], cores=[0, 1]) is None
  plan = workers.plan(2, models, ['x.py', '--workdir=w'], cores=[4, 7])
  assert plan.core_groups == ((4,), (7,)) and plan.models == ('glow', 'vae')
  assert workers.plan(8, models, ['x.py'], cores=[0, 1, 2]).core_groups == ((0, 1), (2,))
  with pytest.raises(user_errors.ConfigError, match='on 1 core.*at most 1'):
    workers.plan(2, models, ['x.py'], cores=[0])
  with pytest.raises(user_errors.ConfigError, match='--workers=-1'):
    workers.plan(-1, models, ['x.py'], cores=[0, 1])
  argv = workers.child_argv(['x.py', '--workdir=w'], 'vae', '/o/vae.pkl', (2, 3))
  assert argv == [sys.executable, 'x.py', '--workdir=w', '--workers=1', '--worker_model=vae',
                  '--worker_task=chain', '--worker_output=/o/vae.pkl', '--worker_cores=2,3']


# A stand-in for the experiment command: it takes its model, output and cores as the
# command does, records the cores it runs on, then acts by its model's name.
_FAKE_WORKER = r'''
import os, pickle, sys, time
from glow_ood.experiment import workers
flag = {a.split('=', 1)[0]: a.split('=', 1)[1] for a in sys.argv[1:]}
model, output = flag['--worker_model'], flag['--worker_output']
workers.become_worker(flag['--worker_cores'])
if flag['--worker_task'] == 'samples':
  print('drawing', model, flush=True)
  with open(output, 'wb') as f:
    pickle.dump({'samples': [model + '.png'], 'phases_s': {}, 'compile_s': {}}, f)
  sys.exit(0)
print('started', model, flush=True)
if model.startswith('fail'):
  print('ValueError: what went wrong', flush=True)
  sys.exit(3)
if model.startswith('slow'):   # like training: one SIGINT saves (a marker here) and stops
  import signal
  def save_and_stop(*_):
    open(output + '.saved', 'w').close()
    sys.exit(130)
  signal.signal(signal.SIGINT, save_and_stop)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  open(output + '.started', 'w').close()
  print('training', flush=True)
  time.sleep(120)
time.sleep(0.5)
os.makedirs(os.path.dirname(output), exist_ok=True)
with open(output, 'wb') as f:
  pickle.dump({'result': {'model': model, 'cores': sorted(os.sched_getaffinity(0))},
               'phases_s': {}, 'compile_s': {}}, f)
open(os.path.join(os.path.dirname(output), model + '.trained'), 'w').close()
time.sleep(0.5)
'''


def _fake_plan(models, tmp_path):
  script = tmp_path / 'fake_worker.py'
  script.write_text(_FAKE_WORKER)
  cores = workers.usable_core_ids()
  groups = ((cores[0],), (cores[-1],))   # one core may serve both slots on a 1-core host
  return workers.Plan(argv=(str(script),), core_groups=groups, models=tuple(models))


def test_run_schedules_every_model_on_its_cores_and_echoes_prefixed(tmp_path, capsys):
  plan = _fake_plan(['a', 'b', 'c'], tmp_path)
  stale = workers.output_path(str(tmp_path), 'c')
  workers.write_output(stale, {'result': 'an earlier invocation'})
  beside = []
  trained = lambda m: os.path.exists(tmp_path / workers.WORKER_DIR / f'{m}.trained')
  chains = workers.run(plan, str(tmp_path), while_waiting=lambda: beside.append(time.time()),
                       samples_ready=trained)
  assert list(chains) == ['a', 'b', 'c'] and beside
  for model, chain in chains.items():
    # Each model's samples: a task of its own, started once no chain waited and the model
    # was trained (its chain had written its marker).
    assert chain['samples']['samples'] == [model + '.png']
    assert chain['samples']['worker']['started'] >= chains['c']['worker']['started']
    assert chain['samples']['worker']['started'] >= os.path.getmtime(
        tmp_path / workers.WORKER_DIR / f'{model}.trained')
  for model, chain in chains.items():
    assert chain['result']['model'] == model          # never the stale file
    assert chain['result']['cores'] == list(chain['worker']['cores'])
    assert chain['worker']['wall_s'] > 0
  # Two slots: a and b start at once, c in the first slot freed (in start order).
  assert [chains[m]['worker']['cores'] for m in 'ab'] == [list(g) for g in plan.core_groups]
  assert chains['c']['worker']['started'] > min(chains[m]['worker']['started'] for m in 'ab')
  out = capsys.readouterr().out
  assert '[a] started a' in out and '[c] started c' in out and '[c samples] drawing c' in out
  with open(workers.log_path(str(tmp_path), 'c')) as f:   # the model's own log, unprefixed
    log = f.read().splitlines()
  assert log[0].startswith('== ') and 'c on cores' in log[0] and log[1] == 'started c'
  assert 'in 2 worker processes side by side' in out


def test_a_failing_worker_stops_the_others_and_ends_in_its_last_line(tmp_path):
  plan = _fake_plan(['fail_first', 'slow_second', 'never_started'], tmp_path)
  start = time.time()
  with pytest.raises(user_errors.WorkerFailed) as raised:
    workers.run(plan, str(tmp_path))
  assert time.time() - start < 60   # the slow worker was stopped, not waited for
  message = user_errors.message(raised.value)
  assert 'the fail_first worker' in message and 'exit status 3' in message
  assert message.endswith('ValueError: what went wrong')
  assert not os.path.exists(workers.output_path(str(tmp_path), 'never_started'))
  assert not os.path.exists(workers.log_path(str(tmp_path), 'fail_first samples'))


def _pair_command(workdir, offline_data, *flags):
  data = [f'--config.{m}.data.path={offline_data["fashion_idx"]}' for m in pair_base.MODELS]
  return [sys.executable, os.path.join('experiments', 'reproduce.py'), '--variant=tiny',
          f'--workdir={workdir}', '--config.experiment.models=cv_glow,vae',
          '--config.experiment.ensemble_size=0', '--config.background.models=',
          '--config.experiment.curve_models=', '--config.experiment.attacks.enabled=false',
          f'--config.experiment.ood.mnist.data.path={offline_data["mnist_npz"]}', *data, *flags]


def _numbers(results: dict) -> dict:
  """The models' results without what measures time or names the workdir."""
  def strip(node):
    if isinstance(node, dict):
      return {k: strip(v) for k, v in node.items()
              if not (k.endswith('_s') or k in ('timings', 'devices', 'seconds', 'workdir',
                                                'npz', 'figures', 'samples', 'members'))}
    if isinstance(node, list):
      return [strip(v) for v in node]
    return node
  return strip(results['models'])


def test_pair_in_two_workers_repeats_the_one_core_run_exactly(offline_data, tmp_path):
  from tests.training.conftest import subprocess_env  # pylint: disable=g-import-not-at-top
  env = subprocess_env()
  env['XLA_FLAGS'] = '--xla_cpu_use_fusion_emitters=false'  # the command splits the CPU
  cores = workers.usable_core_ids()
  if len(cores) < 2:   # a one-core host: --workers=2 is refused in one line
    result = subprocess.run(_pair_command(tmp_path / 'w', offline_data, '--workers=2'),
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'each worker needs one of its own' in result.stderr
    return
  in_workers = tmp_path / 'in_workers'
  result = subprocess.run(_pair_command(in_workers, offline_data, '--workers=2'), cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '[cv_glow] ' in result.stdout and '[vae] ' in result.stdout
  # The same command on one core: --workers=0 then runs both models in turn, one device.
  one_core = tmp_path / 'one_core'
  pin = (f'import os, sys; os.sched_setaffinity(0, {{{cores[-1]}}}); '
         'os.execv(sys.executable, [sys.executable] + sys.argv[1:])')
  command = _pair_command(one_core, offline_data)
  result = subprocess.run([command[0], '-c', pin, *command[1:]], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  loaded = {}
  for name in ('in_workers', 'one_core'):
    with open(tmp_path / name / 'results.json') as f:
      loaded[name] = json.load(f)
  split, alone = loaded['in_workers'], loaded['one_core']
  assert alone['workers'] is None and alone['devices']['count'] == 1
  assert split['workers']['count'] == 2
  assert split['workers']['core_groups'] == [list(g) for g in workers.core_groups(2, cores)]
  for model in ('cv_glow', 'vae'):
    assert split['models'][model]['devices'] == {'count': 1, 'platform': 'cpu', 'cores': 1}
    assert f'{model}: train and evaluate' in split['phases_s']
  assert _numbers(split) == _numbers(alone)
  for model in ('cv_glow', 'vae'):   # the grids, drawn by a task of their own, to the bit
    assert set(split['workers']['samples']) == {'cv_glow', 'vae'}
    paths = [split['models'][model]['samples'], alone['models'][model]['samples']]
    assert len(paths[0]) == len(paths[1]) > 0
    for drawn, reference in zip(*paths):
      with open(drawn, 'rb') as f, open(reference, 'rb') as g:
        assert f.read() == g.read(), (drawn, reference)
  assert split['models']['vae']['ood_metrics']['mnist']['log p(x)']['auroc'] == (
      alone['models']['vae']['ood_metrics']['mnist']['log p(x)']['auroc'])
  with open(in_workers / 'report.md') as f:
    assert 'The models ran in 2 worker processes side by side' in f.read()
  assert os.listdir(in_workers / workers.WORKER_DIR) == []   # read, then removed


def test_ctrl_c_reaches_each_worker_once_and_ends_the_run_interrupted(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  plan = _fake_plan(['slow_a', 'slow_b'], tmp_path)
  started = lambda: all(os.path.exists(workers.output_path(str(tmp_path), m) + '.started')
                        for m in plan.models)
  def press_ctrl_c():   # as a terminal does: SIGINT to this process alone
    deadline = time.time() + 60
    while not started() and time.time() < deadline:
      time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGINT)
  # Python's own Ctrl-C handling (a test runner's worker process may ignore SIGINT).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  threading.Thread(target=press_ctrl_c, daemon=True).start()
  start = time.time()
  try:
    with pytest.raises(user_errors.TrainingInterrupted, match='Stopped on request'):
      workers.run(plan, str(tmp_path))
  finally:
    signal.signal(signal.SIGINT, previous)
  assert time.time() - start < 60
  for model in plan.models:   # each worker saved (its handler ran), none left running
    assert os.path.exists(workers.output_path(str(tmp_path), model) + '.saved')
