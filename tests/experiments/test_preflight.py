"""The pair experiment's checks before any compute (glow_ood.experiment.preflight): the
workdirs a run would train in against their recorded configs, and every data set's split
and size; run_pair calls them before the first training step."""

import json
import os

import numpy as np
import pytest

from glow_ood import config_validation
from glow_ood import workdir_config
from glow_ood.data.errors import DataUnavailableError
from glow_ood.experiment import model_runs
from glow_ood.experiment import pipeline
from glow_ood.experiment import preflight
from glow_ood.configs.pairs import pair_base
from glow_ood.user_errors import WorkdirError
from tests.experiments.conftest import tiny_pair_config


def _config(data):
  config = tiny_pair_config('fashion_mnist_to_mnist')
  for model in pair_base.model_configs(config):
    model.data.path = data['fashion_idx']
  config.experiment.ood.mnist.data.path = data['mnist_npz']
  return config


def test_every_workdir_a_run_trains_in_is_listed():
  config = tiny_pair_config('fashion_mnist_to_mnist')
  models = pipeline.check_pair_config(config)
  names = [name for _, name, _ in preflight.model_workdirs(config, models)]
  assert names == ['glow', 'glow_background', 'glow_seed1', 'glow_background_mu0.05',
                   'glow_background_mu0.3', 'cv_glow', 'pixelcnn', 'vae']


def test_a_recorded_config_the_overrides_contradict(tmp_path, offline_data):
  config = _config(offline_data)
  models = pipeline.check_pair_config(config)
  for name, member in model_runs.member_configs(config, 'glow').items():
    workdir_config.prepare(str(tmp_path / name))
    workdir_config.record(member, str(tmp_path / name))
  preflight.check(config, str(tmp_path), models)   # the same settings: fine
  config.glow.train.num_steps = 60                  # a longer run: fine too
  config.glow.eval.batch_size = 8
  preflight.check(config, str(tmp_path), models)
  config.glow.n_bits = 5
  with pytest.raises(WorkdirError, match=r'glow_background was trained with other settings .*'
                     r'config\.glow\.n_bits: recorded 8, requested 5 \(the config of '
                     r'glow_background follows config\.glow\)'):
    preflight.check(config, str(tmp_path), models)


def test_a_candidate_workdir_that_is_a_file(tmp_path, offline_data):
  config = _config(offline_data)
  models = pipeline.check_pair_config(config)
  (tmp_path / 'glow_background_mu0.3').write_text('')
  with pytest.raises(WorkdirError, match='glow_background_mu0.3 is a file, not a directory'):
    preflight.check(config, str(tmp_path), models)


def test_the_data_of_every_model_and_ood_set(tmp_path, offline_data):
  config = _config(offline_data)
  models = pipeline.check_pair_config(config)
  preflight.check_data(config, models)
  config.vae.train.batch_size = 64   # the tiny IDX files hold 48 training images
  with pytest.raises(config_validation.ConfigError,
                     match=r'lower config\.vae\.train\.batch_size to at most 48'):
    preflight.check_data(config, models)
  config.vae.train.batch_size = 8
  path = str(tmp_path / 'ood.npz')
  np.savez(path, test=np.zeros((3, 28, 28), np.uint8))
  config.experiment.ood.mnist.data.path = path
  config.experiment.ood.mnist.split = 'train'
  with pytest.raises(DataUnavailableError, match=r"config\.experiment\.ood\.mnist\.data "
                     r"\('mnist', path=.*ood\.npz\) cannot serve split 'train'"):
    preflight.check_data(config, models)
  config.experiment.ood.mnist.split = 'test'
  config.cv_glow.train.eval_every = 2
  config.cv_glow.data.path = str(tmp_path / 'train_only')
  os.makedirs(config.cv_glow.data.path)
  with pytest.raises(DataUnavailableError, match=r"config\.cv_glow\.data .*cannot serve split "
                     "'train'"):
    preflight.check_data(config, models)


def test_nothing_is_trained_when_a_check_fails(tmp_path, offline_data, monkeypatch):
  config = _config(offline_data)
  config.glow.train.batch_size = 64

  def fail(*args, **kwargs):
    raise AssertionError('trained before the checks')
  monkeypatch.setattr(pipeline.model_runs, 'run_model', fail)
  with pytest.raises(config_validation.ConfigError, match='config.glow.train.batch_size=64'):
    pipeline.run_pair(config, str(tmp_path / 'pair'))
  assert not os.path.exists(tmp_path / 'pair')


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  for name in (pipeline.RESULTS_FILE, pipeline.REPORT_FILE):
    (tmp_path / name).write_text('earlier\n')

  def failing_render(results, workdir):
    raise RuntimeError('render failed')
  monkeypatch.setattr(pipeline.report, 'render', failing_render)
  with pytest.raises(RuntimeError, match='render failed'):
    pipeline.write_outputs({'pair': 'p'}, workdir)
  assert (tmp_path / pipeline.RESULTS_FILE).read_text() == 'earlier\n'
  assert (tmp_path / pipeline.REPORT_FILE).read_text() == 'earlier\n'
  monkeypatch.setattr(pipeline.report, 'render', lambda results, workdir: '# report\n')
  pipeline.write_outputs({'pair': 'p', 'x': np.float32(1.5)}, workdir)
  assert json.loads((tmp_path / pipeline.RESULTS_FILE).read_text()) == {'pair': 'p', 'x': 1.5}
  assert (tmp_path / pipeline.REPORT_FILE).read_text() == '# report\n'
  assert sorted(os.listdir(tmp_path)) == [pipeline.REPORT_FILE, pipeline.RESULTS_FILE]


def test_timings_are_written_atomically(tmp_path, monkeypatch):
  model_runs._record_time(str(tmp_path), 'train_s', 2.0)  # pylint: disable=protected-access
  before = (tmp_path / model_runs.TIMINGS_FILE).read_bytes()

  def failing_dump(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(model_runs.json, 'dump', failing_dump)
  with pytest.raises(OSError):
    model_runs._record_time(str(tmp_path), 'train_s', 3.0)  # pylint: disable=protected-access
  assert (tmp_path / model_runs.TIMINGS_FILE).read_bytes() == before
  assert os.listdir(tmp_path) == [model_runs.TIMINGS_FILE]
  monkeypatch.undo()
  model_runs._record_time(str(tmp_path), 'train_s', 3.0)  # pylint: disable=protected-access
  assert model_runs.read_timings(str(tmp_path)) == {'train_s': 5.0}


def test_figures_are_written_atomically(tmp_path, monkeypatch):
  from glow_ood.experiment import figures  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'f.png')
  figures.log_px_histogram(path, {'a': np.arange(10.0)}, 'title', 5)
  before = open(path, 'rb').read()
  assert before[:8] == b'\x89PNG\r\n\x1a\n'

  def failing_savefig(self, *args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(figures.plt.Figure, 'savefig', failing_savefig)
  with pytest.raises(OSError):
    figures.log_px_histogram(path, {'a': np.arange(10.0)}, 'title', 5)
  assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['f.png']


def test_fallback_keeps_each_members_damaged_steps_aside(tmp_path, capsys):
  from glow_ood import checkpointing  # pylint: disable=g-import-not-at-top
  config = tiny_pair_config('fashion_mnist_to_mnist')
  models = pipeline.check_pair_config(config)
  for name in ('glow', 'glow_seed1'):
    for step in (3, 6):
      step_dir = tmp_path / name / 'checkpoints' / str(step)
      (step_dir / 'state').mkdir(parents=True)
      (step_dir / 'state' / 'array').write_bytes(bytes(range(step, step + 64)))
      checkpointing.write_checksums(str(step_dir), step)
  (tmp_path / 'glow_seed1' / 'checkpoints' / '6' / 'state' / 'array').write_bytes(bytes(64))
  preflight.set_aside_damaged(config, str(tmp_path), models)
  assert sorted(os.listdir(tmp_path / 'glow' / 'checkpoints')) == ['3', '6']
  assert sorted(os.listdir(tmp_path / 'glow_seed1' / 'checkpoints')) == ['3', '6.damaged']
  out = capsys.readouterr().out
  assert out.startswith('glow_seed1: Damaged checkpoint step 6 (a file differs from its '
                        'checksums: state/array) kept aside as ')
  assert 'going on from step 3' in out
