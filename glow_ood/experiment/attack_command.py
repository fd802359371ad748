"""The attack command's work (experiments/attack.py holds only its flags): attack an npz of
uint8 images with a trained checkpoint and write the attacked set as npz and PNGs.

The gradients and the reported numbers come from the same Evaluator (Evaluator.terms).
The bits/dim reported are those of --mode=evaluate (the run's evaluation key and batches);
the best iterate is selected under an independent key (attack_section.attack_keys), and
the npz records the three keys (selection_key, reporting_key, gradient_key)."""

import os

import numpy as np
from PIL import Image

from glow_ood import data
from glow_ood import eval_files
from glow_ood import evaluate
from glow_ood import parallel
from glow_ood import train_state as train_state_lib
from glow_ood.experiment import attack_figures
from glow_ood.experiment import attack_section


def _in_file_order(result: dict, back: np.ndarray) -> dict:
  """attack_images' per-image arrays (rows of images taken in some order) back in file order."""
  out = dict(result)
  for name in ('images', 'selection_before', 'selection_after', 'first_order_gain',
               'edge_share', 'objective_before', 'objective_after'):
    out[name] = result[name][back]
  out['trace'] = result['trace'][:, back]
  for name in ('before_stats', 'after_stats'):
    out[name] = {k: v[back] for k, v in result[name].items()}
  return out


def attack_file(config, workdir: str, images_path: str, output: str, *, objective: str,
                epsilon: float, num_steps: int, noise_draws: int, split: str = 'test',
                step: int = -1, max_examples: int = 0, target_bits_per_dim=None,
                max_png: int = 100) -> dict:
  """The command's work; returns the paths written and the mean bits/dim before and after."""
  spec = data.DataSpec(**{**dict(config.data), 'name': 'npz', 'source': 'auto',
                          'path': images_path, 'augment': 'none'})
  images = data.load_array(spec, split, max_examples=max_examples or None)
  evaluator = evaluate.Evaluator(config)
  variables, ckpt_step = evaluate.load_state_for_eval(config, workdir, evaluator.mesh,
                                                       None if step < 0 else step)
  key = train_state_lib.run_keys(config.seed)['eval']
  # --mode=evaluate reads the attacked file in the order of a seeded shuffle
  # (config.eval.subset_seed, glow_ood.data.subset_indices): attack and report the images
  # in that order, so that the batches and noise are the evaluation's, then put them back
  # in file order.
  order = data.subset_indices(len(images), None, config.eval.subset_seed)
  result = attack_section.attack_images(
      evaluator, variables, images[order], objective=objective, epsilon=epsilon,
      num_steps=num_steps, noise_draws=noise_draws, key=key, target=target_bits_per_dim)
  result = _in_file_order(result, np.argsort(order))

  os.makedirs(os.path.join(output, 'png'), exist_ok=True)
  before = result['before_stats']['bits_per_dim']
  after = result['after_stats']['bits_per_dim']
  npz_path = os.path.join(output, 'attacked.npz')
  eval_files.write_npz_atomic(npz_path, dict(
      test=result['images'], original=images, bits_per_dim_before=before,
      bits_per_dim_after=after, objective=np.str_(objective), epsilon=np.float64(epsilon),
      num_steps=np.int64(num_steps), noise_draws=np.int64(noise_draws),
      checkpoint_step=np.int64(ckpt_step), dequantization=np.str_(config.eval.dequantization),
      **{f'{name}_key': np.asarray(value, np.uint32) for name, value in result['keys'].items()}))
  for index, image in enumerate(result['images'][:max_png]):
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(pixels).save(os.path.join(output, 'png', f'{index:05d}.png'))
  k = min(4, len(images))
  sign = -1.0 if objective == 'lower' else 1.0
  num_dims = int(np.prod(images.shape[1:]))
  trace = result['trace'][:, :k]
  # The trace is the objective: signed log p(x) (nats), or -|bits/dim - target|.
  trace_bpd = (-(sign * trace) / (num_dims * np.log(2.0)) if objective != 'target'
               else trace)
  panels = attack_figures.attack_panels(
      os.path.join(output, 'panels.png'),
      {objective: {'original': images[:k], 'attacked': result['images'][:k],
                   'bits_per_dim_trace': trace_bpd, 'label': os.path.basename(images_path),
                   'objective': objective}},
      epsilon, f'{objective} at epsilon = {epsilon:g}/255')
  return {'npz': npz_path, 'panels': panels, 'n': int(len(images)), 'step': ckpt_step,
          'bits_per_dim_before': float(before.mean()), 'bits_per_dim_after': float(after.mean())}
