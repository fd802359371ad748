"""The benchmark's compute table: XLA's FLOP count of our programs and the ratio ceiling."""
import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'train_step.py'
_SPEC = importlib.util.spec_from_file_location('benchmark_train_step', _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _size(steps):
  return bench.Size('tiny', 2, steps, 8, 4, (8, 8, 1))


def test_flop_count_covers_every_flow_step():
  # Each added flow step adds the same work; a count that saw a rolled loop's body once
  # (XLA's cost analysis of the evaluation build) would not grow with K.
  counts = [bench.gflop_per_image(_size(k)) for k in (1, 2, 3)]
  for kind in (0, 1):  # train, eval
    first, second = counts[1][kind] - counts[0][kind], counts[2][kind] - counts[1][kind]
    assert first > 0
    assert second == pytest.approx(first, rel=0.05)  # XLA folds a little differently per K
  # Training differentiates the pass: well over the evaluation's count.
  assert counts[2][0] > 2 * counts[2][1]


def test_our_matmul_rate_is_a_rate():
  rate = bench.our_matmul_rate()
  assert 0.1 < rate < 1e5  # GFLOP/s on any CPU


def test_compute_line_arithmetic():
  row = {'train': 10.0, 'eval': 40.0, 'matmul': 200.0, 'peer_train': 8.0, 'peer_eval': 20.0,
         'peer_matmul': 100.0}
  line = bench.compute_bound_line('s', row, (2.0, 1.0), with_peer=True)
  cells = [c.strip() for c in line.strip('|').split('|')]
  # Reached: 10 img/s x 2 GFLOP = 20 GFLOP/s (10% of 200); 40 x 1 = 40 (20%).
  assert cells[2] == '20 / 40 (10% / 20%)'
  assert cells[4] == '16 / 20'
  # Ceiling: 200 GFLOP/s / 2 GFLOP = 100 img/s against the peer's 8 -> 12.5; eval 200 / 20.
  assert cells[6] == '12.50 / 10.00'
  alone = bench.compute_bound_line('s', row, (2.0, 1.0), with_peer=False)
  assert alone.endswith('| - | - | - |')
