"""atomic_files.atomic_write and the writers built on it: all or nothing, no stray temp file."""

import json
import os
import stat

import ml_collections
import numpy as np
from PIL import Image
import pytest

from glow_ood import atomic_files


class _Boom(Exception):
  pass


def _listing(directory):
  return sorted(os.listdir(directory))


def test_success_renames_into_place_and_creates_the_directory(tmp_path):
  path = str(tmp_path / 'new' / 'dir' / 'out.bin')
  with atomic_files.atomic_write(path, 'wb') as f:
    f.write(b'abc')
    # Until the block ends, readers of `path` see nothing.
    assert not os.path.exists(path)
    assert os.path.basename(f.name).startswith(atomic_files.TEMP_PREFIX)
    assert os.path.dirname(f.name) == os.path.dirname(path)
  with open(path, 'rb') as f:
    assert f.read() == b'abc'
  assert _listing(tmp_path / 'new' / 'dir') == ['out.bin']


def test_text_mode_and_open_arguments(tmp_path):
  path = str(tmp_path / 'out.txt')
  with atomic_files.atomic_write(path, 'w', encoding='utf-8') as f:
    f.write('bits/dim \u2248 3.35\n')
  with open(path, encoding='utf-8') as f:
    assert f.read() == 'bits/dim \u2248 3.35\n'


@pytest.mark.parametrize('error', [_Boom, KeyboardInterrupt])
def test_failure_leaves_no_temp_file_and_no_target(tmp_path, error):
  path = str(tmp_path / 'out.bin')
  with pytest.raises(error):
    with atomic_files.atomic_write(path) as f:
      f.write(b'partial')
      raise error()
  assert _listing(tmp_path) == []


@pytest.mark.parametrize('error', [_Boom, KeyboardInterrupt])
def test_existing_target_survives_a_failed_write_unchanged(tmp_path, error):
  path = tmp_path / 'out.bin'
  path.write_bytes(b'old content')
  with pytest.raises(error):
    with atomic_files.atomic_write(str(path)) as f:
      f.write(b'new, half written')
      raise error()
  assert path.read_bytes() == b'old content'
  assert _listing(tmp_path) == ['out.bin']


def test_existing_target_is_replaced_on_success(tmp_path):
  path = tmp_path / 'out.bin'
  path.write_bytes(b'old content that is longer')
  with atomic_files.atomic_write(str(path)) as f:
    f.write(b'new')
  assert path.read_bytes() == b'new'
  assert _listing(tmp_path) == ['out.bin']


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
  path = tmp_path / 'out.bin'
  path.write_bytes(b'old')

  def no_rename(src, dst):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(atomic_files.os, 'replace', no_rename)
  with pytest.raises(OSError, match='No space'):
    with atomic_files.atomic_write(str(path)) as f:
      f.write(b'new')
  assert path.read_bytes() == b'old'
  assert _listing(tmp_path) == ['out.bin']


def test_file_mode_follows_the_umask_like_open(tmp_path):
  previous = os.umask(0o022)
  try:
    path = str(tmp_path / 'out.bin')
    with atomic_files.atomic_write(path) as f:
      f.write(b'x')
  finally:
    os.umask(previous)
  # mkstemp would give 0o600: results other users (or a container) cannot read.
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_read_mode_is_refused(tmp_path):
  with pytest.raises(ValueError, match='write mode'):
    with atomic_files.atomic_write(str(tmp_path / 'x'), 'rb'):
      pass
  assert _listing(tmp_path) == []


def test_temp_names_keep_the_extension_and_differ():
  names = {atomic_files.temp_path_for('/d/eval/a_test_step8.npz') for _ in range(20)}
  assert len(names) == 20
  for name in names:
    assert os.path.dirname(name) == '/d/eval'
    assert os.path.basename(name).startswith('.tmp_a_test_step8.')
    assert name.endswith('.npz')


# The writers that use it.

def test_write_npz_atomic_round_trip_and_failure(tmp_path, monkeypatch):
  from glow_ood import eval_files  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'eval' / 'x.npz')
  eval_files.write_npz_atomic(path, {'a': np.arange(3), 'b': np.float32(2.5)})
  with np.load(path) as f:
    np.testing.assert_array_equal(f['a'], np.arange(3))
    assert f['b'] == np.float32(2.5)
  before = open(path, 'rb').read()

  def interrupted_savez(file, **arrays):
    file.write(b'PK\x03\x04 half a zip')
    raise KeyboardInterrupt
  monkeypatch.setattr(eval_files.np, 'savez', interrupted_savez)
  with pytest.raises(KeyboardInterrupt):
    eval_files.write_npz_atomic(path, {'a': np.arange(4)})
  assert open(path, 'rb').read() == before
  assert _listing(tmp_path / 'eval') == ['x.npz']


def test_save_png_round_trip_and_no_temp_file_on_error(tmp_path, monkeypatch):
  from glow_ood import sample  # pylint: disable=g-import-not-at-top
  grid = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
  path = str(tmp_path / 'samples' / 'g.png')
  sample.save_png(grid, path)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
  grey = grid[..., :1]
  sample.save_png(grey, str(tmp_path / 'samples' / 'grey.png'))
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'samples' / 'grey.png')),
                                grey[..., 0])

  def failing_save(self, fp, *args, **kwargs):
    fp.write(b'\x89PNG partial')
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(Image.Image, 'save', failing_save)
  with pytest.raises(OSError):
    sample.save_png(np.zeros_like(grid), path)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
  assert _listing(tmp_path / 'samples') == ['g.png', 'grey.png']


def test_workdir_config_record_is_all_or_nothing(tmp_path, monkeypatch):
  from glow_ood import workdir_config  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({'seed': 3})
  workdir = str(tmp_path)

  def interrupted(_):
    raise KeyboardInterrupt
  monkeypatch.setattr(workdir_config, 'to_json', interrupted)
  with pytest.raises(KeyboardInterrupt):
    workdir_config.record(config, workdir)
  assert _listing(tmp_path) == []
  monkeypatch.undo()
  workdir_config.record(config, workdir)
  assert _listing(tmp_path) == [workdir_config.CONFIG_FILE]
  with open(workdir_config.config_path(workdir)) as f:
    assert json.loads(f.read()) == json.loads(workdir_config.to_json(config))
