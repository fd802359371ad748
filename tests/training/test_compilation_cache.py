"""--compilation_cache: where each setting puts the cache, and that a run served from it
reads its programs back and ends bit for bit where a run that compiled everything ends."""

import os
import subprocess

import pytest

from glow_ood import compilation_cache
from glow_ood.configs import tiny
from tests.training.conftest import (REPO_ROOT, load_checkpoint, main_command,
                                     max_abs_difference, subprocess_env)

HIT = 'Persistent compilation cache hit'
MISS = 'PERSISTENT COMPILATION CACHE MISS'


def test_directory_of_each_setting(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV_VARIABLE, raising=False)
  assert compilation_cache.directory('auto', '/runs/a') == '/runs/a/compilation_cache'
  assert compilation_cache.directory('auto', None) is None
  assert compilation_cache.directory('none', '/runs/a') is None
  assert compilation_cache.directory('/shared/xla', '/runs/a') == '/shared/xla'
  monkeypatch.setenv(compilation_cache.ENV_VARIABLE, '/from/env')
  assert compilation_cache.directory('auto', '/runs/a') == '/from/env'
  assert compilation_cache.directory('none', '/runs/a') is None   # the flag wins over the env
  with pytest.raises(ValueError, match='--compilation_cache is empty'):
    compilation_cache.directory('', '/runs/a')
  a_file = tmp_path / 'f'
  a_file.write_text('')
  with pytest.raises(ValueError, match='is a file, not a directory'):
    compilation_cache.enable(str(a_file))


def _train(workdir, idx_dir, *flags):
  env = subprocess_env()
  env.pop(compilation_cache.ENV_VARIABLE, None)
  env[compilation_cache.MIN_COMPILE_ENV_VARIABLE] = '0'  # tiny programs compile in < 0.5 s
  env['JAX_LOG_COMPILES'] = '1'   # JAX then logs every cache hit ...
  env['JAX_EXPLAIN_CACHE_MISSES'] = '1'   # ... and miss
  result = subprocess.run(
      main_command(workdir, idx_dir, '--config.train.num_steps=4',
                   '--config.train.checkpoint_every=4', *flags),
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  return result.stdout + result.stderr


def test_second_run_served_from_the_cache_ends_where_the_first_does(idx_dir, tmp_path):
  first = str(tmp_path / 'first')
  output = _train(first, idx_dir)                  # --compilation_cache=auto
  cache = os.path.join(first, compilation_cache.DIRECTORY_NAME)
  assert os.path.isdir(cache) and os.listdir(cache), output[-2000:]
  assert HIT not in output and MISS in output

  # Another workdir, the same program, the first's cache named: the train step (and the
  # initialisation) are read back, not compiled; the weights are the same to the bit.
  second = str(tmp_path / 'second')
  output = _train(second, idx_dir, f'--compilation_cache={cache}')
  assert HIT in output, output[-3000:]
  assert not os.path.exists(os.path.join(second, compilation_cache.DIRECTORY_NAME))
  config = tiny.get_config()
  config.data.path = idx_dir
  config.train.num_steps = 4
  a, meta_a = load_checkpoint(config, first)
  b, meta_b = load_checkpoint(config, second)
  assert meta_a['step'] == meta_b['step'] == 4
  assert max_abs_difference(a.params, b.params) == 0.0
  assert max_abs_difference(a.opt_state, b.opt_state) == 0.0

  # none: nothing read or written.
  third = str(tmp_path / 'third')
  output = _train(third, idx_dir, '--compilation_cache=none')
  assert HIT not in output and MISS not in output
  assert not os.path.exists(os.path.join(third, compilation_cache.DIRECTORY_NAME))
