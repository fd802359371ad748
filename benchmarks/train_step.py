"""Throughput of the real train step and evaluation pass, beside normflows' Glow.

    python benchmarks/train_step.py                    # all sizes, 5 processes per side
    python benchmarks/train_step.py --sizes=quick --processes=3 --no_memory
    python benchmarks/train_step.py --memory_only
    python benchmarks/train_step.py --cpu_devices=1    # one CPU device instead of the default

Times `glow_ood.train.make_train_step` (the jitted step the trainer runs: dequantization,
loss, gradient, clipping, Adam, metrics) and the evaluation forward pass of
`glow_ood.evaluate`, in images per second. With the `bench` extra installed
(`pip install -e '.[bench]'`: torch, normflows) it builds normflows' Glow with the same
architecture (L levels of K steps of ActNorm, LU 1x1 conv, affine coupling with a
conv3x3-ReLU-conv1x1-ReLU-conv3x3 net, learned priors), the same batch and Adam.

Every measurement runs in fresh processes, as a user launches: for each size,
--processes pairs of one process per side, started side by side, their rounds
alternating (only one computes at a time). Ours is set up as `python -m
glow_ood.main` sets itself up by default (the CPU split into the JAX devices the
launcher chooses for that config, --host_memory auto); the peer gets as many torch
threads as there are usable cores and its allocator's default. Printed: each pair's
rates as it ends, then per size the median over processes, the largest deviation of
one process from it (the spread a user sees between launches) and the median and
range of the per-pair ratios. Then the compute table: XLA's count of our step's
floating-point operations per image, the GFLOP/s each side reached at that count, each
process's float32 product rate (MATMUL_SHAPE), and the ratio ours would reach at most if
every operation of its step ran at that rate.

`--host_memory` (default auto: keep on a CPU-only machine) is the launcher's setting of
the same name (`glow_ood.host_memory`): XLA's per-step temporaries reuse mapped memory
instead of page-faulting fresh pages every step; `--host_memory=release` times the C
allocator's default.

The split priors differ slightly: ours conditions each on the kept half through a 3x3
conv; normflows' are learned per channel. Both are a small share of the step.

Finally prints the compiled temporary memory of one train step (L=2, width 128, batch 32,
32x32x1) at K=8 and K=32 for each `model.recompute` strategy.
"""

import argparse
import dataclasses
import os
import importlib.metadata
import importlib.util
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from glow_ood.configs import common
from glow_ood import evaluate
from glow_ood import host_memory
from glow_ood import parallel
from glow_ood import train
from glow_ood import train_state as train_state_lib


@dataclasses.dataclass(frozen=True)
class Size:
  name: str
  levels: int
  steps: int
  width: int
  batch: int
  image: tuple[int, int, int]  # H, W, C


SIZES = (
    Size('quick', 2, 8, 64, 64, (32, 32, 1)),
    Size('w128', 2, 8, 128, 64, (32, 32, 1)),
    Size('w512', 2, 8, 512, 32, (32, 32, 1)),
    Size('L3_rgb', 3, 8, 128, 32, (32, 32, 3)),
)


def make_config(size: Size, **model_overrides):
  config = common.base_config()
  config.model.num_levels = size.levels
  config.model.steps_per_level = size.steps
  config.model.hidden_channels = size.width
  config.model.coupling = 'affine'
  config.model.invconv = 'lu'
  config.model.coupling_net = 'glow'
  config.model.learn_top_prior = True
  for key, value in model_overrides.items():
    config.model[key] = value
  config.train.batch_size = size.batch
  config.train.optimizer = 'adam'
  config.data.image_size = size.image[0]
  config.data.channels = size.image[2]
  return config


def random_batch(size: Size, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (size.batch,) + size.image, dtype=np.uint8)


class OursRunner:
  """The project's train step and evaluation pass at one size."""

  def __init__(self, size: Size, **model_overrides):
    self.size = size
    config = make_config(size, **model_overrides)
    mesh = parallel.make_mesh()
    self.batch = parallel.global_batch(mesh, random_batch(size))
    keys = train_state_lib.run_keys(0)
    self.key = keys['train']
    self.state = train_state_lib.create_train_state(config, mesh, keys['init'], self.batch)
    self.step = train.make_train_step(config, mesh)
    # The evaluation pass exactly as the Evaluator jits it.
    self.eval_fn = evaluate.Evaluator(config, mesh).terms_fn('uniform')
    self.train_rate(1)  # compile + warm-up
    self.eval_rate(1)
    # As the trainer does after its first step (with --host_memory keep).
    host_memory.back_heap_with_huge_pages()

  def train_rate(self, num_steps: int) -> float:
    start = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.step(self.state, self.batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return num_steps * self.size.batch / (time.perf_counter() - start)

  def eval_rate(self, num_steps: int) -> float:
    start = time.perf_counter()
    for _ in range(num_steps):
      variables = train_state_lib.model_variables(self.state.params, self.state.constants)
      out = self.eval_fn(variables, self.batch, self.key)
    jax.block_until_ready(out)
    return num_steps * self.size.batch / (time.perf_counter() - start)


class PeerRunner:
  """normflows' Glow at the same size, Adam, clipping at the same global norm."""

  def __init__(self, size: Size, grad_clip_norm: float = 100.0):
    import normflows as nf  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.size = size
    self.grad_clip_norm = grad_clip_norm
    torch.manual_seed(0)
    h, w, c = size.image
    levels = size.levels
    priors, flows, merges = [], [], []
    # normflows orders levels from the top (coarsest) one down.
    for i in range(levels):
      channels = c * 2 ** (levels + 1 - i)
      flows.append([nf.flows.GlowBlock(channels, size.width, split_mode='channel', scale=True)
                    for _ in range(size.steps)] + [nf.flows.Squeeze()])
      if i == 0:
        latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
      else:
        merges.append(nf.flows.Merge())
        latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
      priors.append(nf.distributions.GlowBase(latent))
    self.model = nf.MultiscaleFlow(priors, flows, merges, class_cond=False)
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
    batch = torch.from_numpy(random_batch(size)).permute(0, 3, 1, 2).float()
    self.batch = batch
    self.train_rate(1)  # ActNorm's data-dependent init + warm-up
    self.eval_rate(1)

  def _dequantized(self):
    return (self.batch + self.torch.rand_like(self.batch)) / 256.0

  def train_rate(self, num_steps: int) -> float:
    torch = self.torch
    start = time.perf_counter()
    for _ in range(num_steps):
      loss = self.model.forward_kld(self._dequantized())
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
      self.optimizer.step()
    float(loss)
    return num_steps * self.size.batch / (time.perf_counter() - start)

  def eval_rate(self, num_steps: int) -> float:
    start = time.perf_counter()
    with self.torch.no_grad():
      for _ in range(num_steps):
        log_p = self.model.log_prob(self._dequantized(), None)
    float(log_p.sum())
    return num_steps * self.size.batch / (time.perf_counter() - start)


# The product that dominates the w512 step (its first level's 1x1 convs, B*H*W = 32*16*16
# rows of width 512), chained so one call outlasts the dispatch.
MATMUL_SHAPE = (8192, 512, 512)
MATMUL_CHAIN = 10


def matmul_gflops(chain, reps: int = 5) -> float:
  """GFLOP/s of `chain()` (MATMUL_CHAIN products of MATMUL_SHAPE, blocking), median of reps
  after one warm-up call."""
  chain()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    chain()
    times.append(time.perf_counter() - start)
  m, k, n = MATMUL_SHAPE
  return MATMUL_CHAIN * 2 * m * k * n / statistics.median(times) / 1e9


def our_matmul_rate() -> float:
  """The float32 product rate XLA reaches on this process's devices: rows split over the
  mesh as the batch is, the matrix replicated."""
  mesh = parallel.make_mesh()
  m, k, n = MATMUL_SHAPE
  x = jax.device_put(np.ones((m, k), np.float32), parallel.batch_sharding(mesh))
  w = jax.device_put(np.full((k, n), 1e-3, np.float32), parallel.replicated(mesh))

  @jax.jit
  def chain(x, w):
    for _ in range(MATMUL_CHAIN):
      x = x @ w
    return x

  return matmul_gflops(lambda: chain(x, w).block_until_ready())


def peer_matmul_rate() -> float:
  """The same product chain in torch, with the peer's threads."""
  import torch  # pylint: disable=g-import-not-at-top
  m, k, n = MATMUL_SHAPE
  x = torch.ones(m, k)
  w = torch.full((k, n), 1e-3)

  def chain():
    y = x
    for _ in range(MATMUL_CHAIN):
      y = y @ w
    return float(y[0, 0])

  return matmul_gflops(chain)


def one_device_step_inputs(config, size: Size):
  """A one-device mesh and the train step's abstract arguments (state, whole batch, key),
  for compiling without compute."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))
  state = train_state_lib.abstract_train_state(config, mesh)
  batch = jax.ShapeDtypeStruct((size.batch,) + size.image, np.uint8,
                               sharding=parallel.batch_sharding(mesh))
  key = jax.ShapeDtypeStruct((2,), np.uint32, sharding=parallel.replicated(mesh))
  return mesh, state, batch, key


def gflop_per_image(size: Size) -> tuple[float, float]:
  """XLA's count of the floating-point operations in our train step and evaluation pass,
  per image (one device holding the whole batch; no compute).

  Built with every flow step unrolled: XLA's cost analysis counts a rolled loop's body
  once, and the evaluation build rolls its scan. The peer's Glow has the same layers but
  for the split priors (ours: a 3x3 conv on the kept half), a small share.
  """
  config = make_config(size, scan_unroll=size.steps)
  mesh, state, batch, key = one_device_step_inputs(config, size)
  variables = train_state_lib.model_variables(state.params, state.constants)
  programs = (train.make_train_step(config, mesh).lower(state, batch, key),
              evaluate.Evaluator(config, mesh).terms_fn('uniform').lower(variables, batch, key))
  counts = []
  for lowered in programs:
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    counts.append(cost['flops'] / size.batch / 1e9)
  return counts[0], counts[1]


def peer_available() -> bool:
  """Whether the bench extra is installed (checked without importing torch here)."""
  return all(importlib.util.find_spec(name) is not None for name in ('torch', 'normflows'))


class WorkerProcess:
  """One side's runner (ours or the peer) in a fresh child process, one round at a time
  over a pipe.

  Each process is set up as a user's would be: ours splits the CPU into JAX devices
  and applies --host_memory first thing, as `python -m glow_ood.main` does; the peer
  sets torch's threads and leaves the allocator alone. Fresh processes per repeat show
  what a user gets from one launch to the next, not only within one process.
  """

  def __init__(self, side: str, size: Size, cpu_devices: int, host_memory_choice: str):
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), '--worker', side, size.name,
         str(cpu_devices), host_memory_choice],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self._read()  # built, compiled, warmed up

  def _read(self) -> str:
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f'A benchmark process ended (exit status {self.process.wait()}); '
                         'its error is above.')
    return line.strip()

  def _rate(self, kind: str, num_steps: int) -> float:
    self.process.stdin.write(f'{kind} {num_steps}\n')
    self.process.stdin.flush()
    return float(self._read())

  def train_rate(self, num_steps: int) -> float:
    return self._rate('train', num_steps)

  def eval_rate(self, num_steps: int) -> float:
    return self._rate('eval', num_steps)

  def matmul_rate(self) -> float:
    """GFLOP/s of the MATMUL_SHAPE product chain in this process."""
    return self._rate('matmul', 0)

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def worker(side: str, size_name: str, cpu_devices: int, host_memory_choice: str) -> None:
  """The child's side of WorkerProcess: answers 'train N' / 'eval N' with an img/s rate,
  'matmul 0' with the product rate in GFLOP/s."""
  out = sys.stdout
  sys.stdout = sys.stderr  # library chatter must not reach the pipe
  size = {s.name: s for s in SIZES}[size_name]
  if side == 'ours':
    host_memory.apply(host_memory_choice)
    parallel.split_cpu_into_devices(cpu_devices)
    runner = OursRunner(size)
    matmul_rate = our_matmul_rate
  else:
    import torch  # pylint: disable=g-import-not-at-top
    # As many threads as XLA's CPU client: one per core this process may run on.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    runner = PeerRunner(size)
    matmul_rate = peer_matmul_rate
  out.write('ready\n')
  out.flush()
  for line in sys.stdin:
    kind, num_steps = line.split()
    if kind == 'matmul':
      rate = matmul_rate()
    else:
      rate = (runner.train_rate if kind == 'train' else runner.eval_rate)(int(num_steps))
    out.write(f'{rate!r}\n')
    out.flush()


def spread(values) -> float:
  """Largest deviation from the median, as a fraction of it (0.15 = within +-15%)."""
  middle = statistics.median(values)
  return max(abs(v - middle) for v in values) / middle


def benchmark_size(size: Size, processes: int, rounds: int, num_steps: int, with_peer: bool,
                   cpu_devices: int, host_memory_choice: str) -> dict:
  """Per process pair: a fresh process of each side, rounds alternating between them; a
  process's rate is the median of its rounds. Headline: the median over processes, and
  the ratio's median over pairs (each pair measured side by side)."""
  per_process = {'train': [], 'eval': [], 'matmul': [],
                 'peer_train': [], 'peer_eval': [], 'peer_matmul': []}
  for p in range(processes):
    ours = WorkerProcess('ours', size, cpu_devices, host_memory_choice)
    peer = WorkerProcess('peer', size, cpu_devices, host_memory_choice) if with_peer else None
    rates = {k: [] for k in per_process}
    for r in range(rounds):
      # Alternate who goes first so slow drifts of a shared machine hit both.
      order = [('', ours), ('peer_', peer)] if (p + r) % 2 == 0 else [('peer_', peer), ('', ours)]
      for prefix, runner in order:
        if runner is None:
          continue
        rates[prefix + 'train'].append(runner.train_rate(num_steps))
        rates[prefix + 'eval'].append(runner.eval_rate(num_steps))
    for prefix, runner in order:  # once per process, after its rounds
      if runner is not None:
        rates[prefix + 'matmul'].append(runner.matmul_rate())
    for runner in (ours, peer):
      if runner is not None:
        runner.close()
    for name, values in rates.items():
      if values:
        per_process[name].append(statistics.median(values))
    print(f'  {size.name} process pair {p + 1}/{processes}: ' + ', '.join(
        f'{name} {values[-1]:.0f} {"GFLOP/s" if name.endswith("matmul") else "img/s"}'
        for name, values in per_process.items() if values), flush=True)
  row = {name: statistics.median(v) for name, v in per_process.items() if v}
  row.update({name + '_spread': spread(v) for name, v in per_process.items() if v})
  row['per_process'] = per_process
  if with_peer:
    for kind in ('train', 'eval'):
      ratios = [a / b for a, b in zip(per_process[kind], per_process['peer_' + kind])]
      row[kind + '_ratio'] = statistics.median(ratios)
      row[kind + '_ratio_range'] = (min(ratios), max(ratios))
  return row


def compiled_temp_mib(size: Size, **model_overrides) -> float:
  """Temporary memory XLA reserves for one train step on one device holding the whole
  batch, MiB (no compute).

  One device, whatever --cpu_devices says: split N ways, each device's share of the
  activations shrinks N-fold but its parameter-sized temporaries (gradients, Adam's
  update) do not, so the depth ratio would mix the two.
  """
  config = make_config(size, **model_overrides)
  mesh, state, batch, key = one_device_step_inputs(config, size)
  compiled = train.make_train_step(config, mesh).lower(state, batch, key).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2 ** 20


COMPUTE_BOUND_HEADER = (
    '\nCompute: XLA\'s count of our step\'s floating-point operations (GFLOP per image, train '
    '/ eval; the peer runs the same layers), the GFLOP/s each side reached at that count, and '
    'the float32 product rate of each process ([{m}x{k}]x[{k}x{n}] chained, median over processes). '
    '"Ceiling": the ratio ours would reach if every operation of its step ran at our product '
    'rate, the most XLA:CPU does per second on this machine:\n'
    '| size | GFLOP/img train / eval | ours GFLOP/s train / eval (of product rate) | '
    'our product GFLOP/s | peer GFLOP/s train / eval | peer product GFLOP/s | '
    'ratio ceiling train / eval |\n'
    '|---|---|---|---|---|---|---|')


def compute_bound_line(label: str, row: dict, gflop: tuple[float, float],
                       with_peer: bool) -> str:
  """One row of the compute table from a size's medians and its FLOP count per image."""
  product = row['matmul']
  reached = [row[kind] * count for kind, count in zip(('train', 'eval'), gflop)]
  line = (f'| {label} | {gflop[0]:.3f} / {gflop[1]:.3f} | {reached[0]:.0f} / {reached[1]:.0f} '
          f'({100 * reached[0] / product:.0f}% / {100 * reached[1] / product:.0f}%) | '
          f'{product:.0f} |')
  if not with_peer:
    return line + ' - | - | - |'
  peer = [row['peer_' + kind] * count for kind, count in zip(('train', 'eval'), gflop)]
  ceiling = [product / count / row['peer_' + kind]
             for kind, count in zip(('train', 'eval'), gflop)]
  return line + (f' {peer[0]:.0f} / {peer[1]:.0f} | {row["peer_matmul"]:.0f} | '
                 f'{ceiling[0]:.2f} / {ceiling[1]:.2f} |')


def print_memory(strategies) -> None:
  print('\nCompiled temporary memory of one train step (L=2, width 128, batch 32, 32x32x1, '
        'one device):')
  print('| model.recompute | K=8 MiB | K=32 MiB | K=32 / K=8 |')
  print('|---|---|---|---|')
  for strategy in strategies:
    mib = [compiled_temp_mib(Size('mem', 2, k, 128, 32, (32, 32, 1)), recompute=strategy)
           for k in (8, 32)]
    print(f'| {strategy} | {mib[0]:.1f} | {mib[1]:.1f} | {mib[1] / mib[0]:.3f} |', flush=True)


def launch_cpu_devices(size: Size) -> int:
  """The JAX CPU devices `python -m glow_ood.main` chooses by default (--cpu_devices=0) for
  this size's config: one per usable core, fewer until every batch size divides."""
  return parallel.auto_cpu_devices(parallel.config_batch_sizes(make_config(size)))


def main() -> None:
  if len(sys.argv) == 6 and sys.argv[1] == '--worker':
    worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    return
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default=','.join(s.name for s in SIZES),
                      help='comma-separated names among ' + ', '.join(s.name for s in SIZES))
  parser.add_argument('--processes', type=int, default=5,
                      help='fresh processes per side and size (each pair measured side by side)')
  parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per process')
  parser.add_argument('--steps', type=int, default=10, help='timed steps per round')
  parser.add_argument('--no_peer', action='store_true', help='time only glow_ood')
  parser.add_argument('--memory_only', action='store_true')
  parser.add_argument('--no_memory', action='store_true')
  parser.add_argument('--cpu_devices', type=int, default=0,
                      help='JAX CPU devices for our processes; 0 (default) = what the launcher '
                      'chooses by default for each size (one per usable core, fewer until the '
                      'batch divides); 1 = one CPU device; ignored with an accelerator')
  parser.add_argument('--host_memory', choices=host_memory.CHOICES, default='auto',
                      help=host_memory.FLAG_HELP + ' Our processes only; the peer keeps its '
                      'allocator\'s default.')
  parser.add_argument('--strategies', default='none,checkpoint,invertible',
                      help='model.recompute values for the memory table')
  args = parser.parse_args()
  if args.processes < 1 or args.rounds < 1 or args.steps < 1:
    parser.error('--processes, --rounds and --steps must each be at least 1')

  with_peer = not args.no_peer and peer_available()
  cores = len(os.sched_getaffinity(0))
  print(f'jax {jax.__version__}, {os.cpu_count()} cores ({cores} usable), load average '
        f'{", ".join(f"{v:.2f}" for v in os.getloadavg())}; our processes: --host_memory='
        f'{args.host_memory}, --cpu_devices={args.cpu_devices or "as launched"}')
  if with_peer:
    print(f'peer: normflows {importlib.metadata.version("normflows")}, torch '
          f'{importlib.metadata.version("torch")}, {cores} threads, default allocator')
  elif not args.no_peer:
    print("peer: not installed (pip install -e '.[bench]'); timing glow_ood alone")

  if not args.memory_only:
    wanted = args.sizes.split(',')
    header = '| size | devices | glow_ood train img/s (spread) | glow_ood eval img/s (spread) |'
    rule = '|---|---|---|---|'
    if with_peer:
      header += (' normflows train img/s (spread) | normflows eval img/s (spread) |'
                 ' train ratio (range) | eval ratio (range) |')
      rule += '---|---|---|---|'
    rows, bound_rows = [], []
    for size in SIZES:
      if size.name not in wanted:
        continue
      devices = args.cpu_devices or launch_cpu_devices(size)
      row = benchmark_size(size, args.processes, args.rounds, args.steps, with_peer, devices,
                           args.host_memory)
      label = (f'{size.name}: L={size.levels} K={size.steps} W={size.width} B={size.batch} '
               f'{"x".join(map(str, size.image))}')
      cell = lambda name: f'{row[name]:.0f} (±{100 * row[name + "_spread"]:.0f}%)'
      line = f'| {label} | {devices} | {cell("train")} | {cell("eval")} |'
      if with_peer:
        line += (f' {cell("peer_train")} | {cell("peer_eval")} |'
                 f' {row["train_ratio"]:.2f} ({row["train_ratio_range"][0]:.2f}-'
                 f'{row["train_ratio_range"][1]:.2f}) |'
                 f' {row["eval_ratio"]:.2f} ({row["eval_ratio_range"][0]:.2f}-'
                 f'{row["eval_ratio_range"][1]:.2f}) |')
      rows.append(line)
      bound_rows.append(compute_bound_line(label, row, gflop_per_image(size), with_peer))
    print(f'\nMedians over {args.processes} fresh processes per side (each the median of '
          f'{args.rounds} rounds of {args.steps} steps); spread: the largest deviation of one '
          'process from that median; ratio: ours / peer per side-by-side pair, median and range:')
    print(header)
    print(rule)
    print('\n'.join(rows), flush=True)
    print(COMPUTE_BOUND_HEADER.format(**dict(zip('mkn', MATMUL_SHAPE))))
    print('\n'.join(bound_rows), flush=True)
  if not args.no_memory:
    print_memory(args.strategies.split(','))


if __name__ == '__main__':
  main()
