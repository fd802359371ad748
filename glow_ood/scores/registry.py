"""OOD scores: one registry, each score one number per image, higher = more OOD.

Every score is a function of per-image *statistics*, the arrays an evaluation
file holds (glow_ood.evaluate: log_px, bits_per_dim [N]; log_pz and the
log-dets per kind [N, L]) plus what the score needs beyond them:

  background_log_px [N]    log p of the same images under a background model
  ensemble_log_px [N, M]   log p under M models trained with different seeds
  code_bits_<compressor> [N]  lossless code length of the 8-bit image, bits

A score may be fitted, on in-distribution *training* statistics only (never
on OOD data); `fn(stats, fitted)` is written in jnp so a score can be
differentiated with respect to the image (glow_ood.analysis.attacks).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from glow_ood.flows.glow import FLOW_TERMS
from glow_ood.scores import density

COMPRESSOR_NAMES = {'png': 'PNG', 'jpeg2000': 'JPEG 2000', 'zlib': 'zlib'}

Stats = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Score:
  name: str                      # report name and results.json key
  description: str               # one line: what it computes
  reference: str                 # where it comes from
  needs: str                     # what beyond one model's evaluation it uses
  requires: tuple[str, ...]      # statistics keys it reads
  fn: Callable[[Stats, Any], jax.Array]   # (stats, fitted) -> [N]
  fit: Callable[[Stats], Any] | None = None  # training stats -> fitted (None: nothing)
  differentiable: bool = True    # False when a term cannot follow the image (a code length)

  def applies_to(self, stats: Stats) -> bool:
    return all(key in stats for key in self.requires)


FLOW_DOSE_TERMS = FLOW_TERMS  # DoSE's statistics for a flow: all of its terms


def dose_features(stats: Stats, terms: Sequence[str] = FLOW_DOSE_TERMS) -> jax.Array:
  """[N, F]: log p(x), then every column of the model's other per-image terms
  (a flow's per-level log p(z) and log-dets; a VAE's log p(x|z) and KL)."""
  columns = [jnp.asarray(stats['log_px'])[:, None]]
  columns += [jnp.asarray(stats[t]).reshape(len(columns[0]), -1) for t in terms if t in stats]
  return jnp.concatenate([c.astype(jnp.float32) for c in columns], axis=-1)


def _dose_terms(stats: Stats, terms: Sequence[str]) -> jax.Array:
  """The DoSE features without log p(x): for a flow their exact sum, so a joint density
  over all of them would be degenerate along that direction."""
  return dose_features(stats, terms)[:, 1:]


def _bits_per_dim(stats):
  return jnp.asarray(stats['bits_per_dim'])


def _log_p_score() -> Score:
  return Score(
      name='log p(x)', description='bits/dim of the image (the paper\'s failing baseline)',
      reference='Nalisnick et al. 2019', needs='nothing', requires=('bits_per_dim',),
      fn=lambda stats, _: _bits_per_dim(stats))


def _typicality_score() -> Score:
  return Score(
      name='typicality', description='abs(bits/dim - mean training bits/dim), one image at a time',
      reference='Nalisnick et al. 2019b', needs='training statistics',
      requires=('bits_per_dim',),
      fit=lambda stats: jnp.asarray(np.mean(stats['bits_per_dim']), jnp.float32),
      fn=lambda stats, entropy: jnp.abs(_bits_per_dim(stats) - entropy))


def _likelihood_ratio_score() -> Score:
  return Score(
      name='likelihood ratio',
      description='log p_background(x) - log p(x), background model trained on mutated images',
      reference='Ren et al. 2019', needs='a background model', requires=('log_px',
                                                                          'background_log_px'),
      fn=lambda stats, _: jnp.asarray(stats['background_log_px']) - jnp.asarray(stats['log_px']))


def _complexity_score(compressor: str, num_dims: int) -> Score:
  key = f'code_bits_{compressor}'
  return Score(
      name=f'input complexity ({COMPRESSOR_NAMES.get(compressor, compressor)})',
      description=f'bits/dim - {COMPRESSOR_NAMES.get(compressor, compressor)} code length per dim '
                  '(-log2 p(x) - L(x), per dimension)',
      reference='Serrà et al. 2020', needs='a lossless compressor',
      requires=('bits_per_dim', key),
      fn=lambda stats, _: _bits_per_dim(stats) - jnp.asarray(stats[key]) / num_dims,
      differentiable=False)


def _level_scores(latent_dims: Sequence[int]) -> list[Score]:
  num_levels = len(latent_dims)
  scores = []
  for level in range(num_levels):
    which = ('finest' if level == 0 else 'coarsest' if level == num_levels - 1 else 'middle')
    scores.append(Score(
        name=f'log p(z_{level})',
        description=f'-log p(z_{level}) alone, the {which} level\'s prior term'
                    + (' (the last level)' if level == num_levels - 1 else ''),
        reference='Schirrmeister et al. 2020; Kirichenko et al. 2020', needs='nothing',
        requires=('log_pz',),
        fn=lambda stats, _, level=level: -jnp.asarray(stats['log_pz'])[:, level]))
  if num_levels > 1:
    first, last = latent_dims[0], latent_dims[-1]

    def level_ratio(stats, _):
      # log of p(z_0)^(1/d_0) / p(z_last)^(1/d_last): the coarse level's per-dim NLL with
      # the finest level's (local pixel statistics) taken out, like a likelihood ratio.
      log_pz = jnp.asarray(stats['log_pz'])
      return log_pz[:, 0] / first - log_pz[:, -1] / last

    scores.append(Score(
        name='level ratio',
        description=f'-log p(z_{num_levels - 1})/d_{num_levels - 1} + log p(z_0)/d_0 '
                    '(coarsest against finest prior term, per dim); one-sided: flags a finest '
                    'level that is too likely, blind to one that is too unlikely (noise)',
        reference='this code base, after the local/semantic split of Schirrmeister et al. '
                  '2020 (not a published score)', needs='nothing', requires=('log_pz',),
        fn=level_ratio))

    def fit_ratio(stats):
      ratio = np.asarray(level_ratio(stats, None), np.float64)
      return jnp.asarray([ratio.mean(), max(ratio.std(), 1e-12)], jnp.float32)

    scores.append(Score(
        name='level ratio (two-sided)',
        description='|level ratio - its training mean| / its training std: flags a ratio too '
                    'high or too low',
        reference='this code base (two-sided form of the level ratio)',
        needs='training statistics', requires=('log_pz',), fit=fit_ratio,
        fn=lambda stats, moments: jnp.abs(level_ratio(stats, None) - moments[0]) / moments[1]))
  return scores


def _dose_scores(terms: Sequence[str]) -> list[Score]:
  """DoSE over the model's per-image terms; none for a model with log p(x) alone."""
  if not terms:
    return []
  named = ', '.join(terms)
  features = lambda stats: dose_features(stats, terms)
  others = lambda stats: _dose_terms(stats, terms)
  return [
      Score(name='DoSE (KDE)',
            description=f'-sum of per-statistic kernel log densities of (log p(x), {named}), '
                        'fitted on training images',
            reference='Morningstar et al. 2021', needs='training statistics',
            requires=('log_px',) + tuple(terms[:1]),
            fit=lambda stats: density.fit_product_kde(np.asarray(features(stats))),
            fn=lambda stats, kde: -kde.log_density(features(stats))),
      Score(name='DoSE (Gaussian)',
            description=f'-joint Gaussian log density of ({named}), fitted on training images',
            reference='Morningstar et al. 2021 (joint variant)', needs='training statistics',
            requires=tuple(terms[:1]),
            fit=lambda stats: density.fit_gaussian(np.asarray(others(stats))),
            fn=lambda stats, gaussian: -gaussian.log_density(others(stats))),
  ]


@flax.struct.dataclass
class StatisticsDensity:
  """A density over named per-image statistics, and which statistics they are."""
  names: tuple[str, ...] = flax.struct.field(pytree_node=False)  # feature names, in order
  density: density.ProductKDE


def combined_statistics(stats: Stats, num_dims: int, latent_dims: Sequence[int],
                        terms: Sequence[str]) -> dict[str, jax.Array]:
  """{name: [N]}: the per-image statistics the combined detector models.

  bits/dim; for each lossless code length, bits/dim minus its length per dim (the
  input-complexity difference); for a multi-scale flow, the level ratio (the finest
  level's per-dim log p(z) minus the coarsest's); for any other model kind with
  per-image terms (a VAE's log p(x|z), KL), each term per dim. A flow's per-level
  terms enter through the level ratio alone: they sum to log p(x), and modelled
  separately they add noise without adding a direction (seen on the quick models).
  """
  bpd = jnp.asarray(stats['bits_per_dim'], jnp.float32)
  out = {'bits/dim': bpd}
  for key in sorted(k for k in stats if k.startswith('code_bits_')):
    out[f'bits/dim - {key[len("code_bits_"):]} code/dim'] = (
        bpd - jnp.asarray(stats[key], jnp.float32) / num_dims)
  if len(latent_dims) > 1 and 'log_pz' in stats:
    log_pz = jnp.asarray(stats['log_pz'], jnp.float32)
    out['level ratio'] = log_pz[:, 0] / latent_dims[0] - log_pz[:, -1] / latent_dims[-1]
  elif not latent_dims:
    for term in terms:
      if term in stats:
        value = jnp.asarray(stats[term], jnp.float32).reshape(len(bpd), -1).sum(-1)
        out[f'{term}/dim'] = value / num_dims
  return out


def _combined_score(latent_dims: Sequence[int], num_dims: int, terms: Sequence[str]) -> Score:
  """The default declared detector: two-sided by construction (low density in either tail)."""

  def features(stats, names):
    values = combined_statistics(stats, num_dims, latent_dims, terms)
    missing = [n for n in names if n not in values]
    if missing:
      raise KeyError(f'The combined detector was fitted on {list(names)}; these statistics '
                     f'are missing now: {missing} (same compressors for every set).')
    return jnp.stack([values[n] for n in names], axis=-1)

  def fit(stats):
    names = tuple(combined_statistics(stats, num_dims, latent_dims, terms))
    return StatisticsDensity(names=names, density=density.fit_product_kde(
        np.asarray(features(stats, names), np.float64)))

  return Score(
      name='combined',
      description='-log of a per-statistic kernel density (DoSE\'s form) over bits/dim, '
                  'bits/dim minus each code length per dim, and the level ratio (flows) or '
                  'the per-image terms (a VAE), fitted on training images; flags images too '
                  'likely and too unlikely alike',
      reference='this code base: DoSE (Morningstar et al. 2021) over the input-complexity '
                '(Serrà et al. 2020) and level statistics', needs='training statistics',
      requires=('bits_per_dim',), fit=fit,
      fn=lambda stats, fitted: -fitted.density.log_density(features(stats, fitted.names)))


def _waic_score() -> Score:
  def waic(stats, _):
    log_px = jnp.asarray(stats['ensemble_log_px'])
    return -(log_px.mean(-1) - log_px.var(-1))
  return Score(
      name='WAIC', description='-(mean - variance) of log p(x) over an ensemble of seeds',
      reference='Choi et al. 2018', needs='an ensemble of models', requires=('ensemble_log_px',),
      fn=waic)


def default_scores(latent_dims: Sequence[int], num_dims: int,
                   compressors: Sequence[str] = ('png', 'jpeg2000'),
                   dose_terms: Sequence[str] = FLOW_DOSE_TERMS) -> list[Score]:
  """Every score for a model with these per-level latent sizes and image size H*W*C.

  dose_terms: the model's per-image terms beyond log p(x) that DoSE models (a flow's
  by default; () for a model that reports log p(x) alone: no DoSE).
  """
  scores = [_log_p_score(), _typicality_score(), _likelihood_ratio_score()]
  scores += [_complexity_score(c, num_dims) for c in compressors]
  scores += _level_scores(latent_dims)
  scores += _dose_scores(tuple(dose_terms))
  scores.append(_combined_score(tuple(latent_dims), num_dims, tuple(dose_terms)))
  scores.append(_waic_score())
  return scores


def applicable(scores: Sequence[Score], stats: Stats) -> list[Score]:
  return [s for s in scores if s.applies_to(stats)]


def fit_scores(scores: Sequence[Score], train_stats: Stats) -> dict[str, Any]:
  """{name: fitted} from in-distribution training statistics only (all finite)."""
  bad = overflowed(train_stats)
  if bad.any():
    raise FloatingPointError(
        f'{int(bad.sum())} of the {bad.size} training images have a statistic that is not '
        'finite (log p(x) overflowed on the data the model was trained on): the model is '
        'not usable for fitting scores; check its training loss and bits/dim.')
  return {s.name: (s.fit(train_stats) if s.fit is not None else None) for s in scores}


def _rows(stats: Stats, start: int, stop: int) -> dict:
  return {k: np.asarray(v)[start:stop] for k, v in stats.items() if np.ndim(v) >= 1}


def overflowed(stats: Stats) -> np.ndarray:
  """[N] bool: images with a statistic that is not finite (log p(z) beyond float32's range
  gives log p(x) = -inf on an image far outside what the model has seen)."""
  arrays = [np.asarray(v) for v in stats.values()
            if np.ndim(v) >= 1 and np.issubdtype(np.asarray(v).dtype, np.floating)]
  num = len(arrays[0])
  return ~np.all([np.isfinite(a.reshape(num, -1)).all(-1) for a in arrays], axis=0)


def compute_scores(scores: Sequence[Score], fitted: Mapping[str, Any], stats: Stats,
                   chunk: int = 1024) -> dict[str, np.ndarray]:
  """{name: [N] float64} for every score whose statistics are present, in chunks of rows.

  On an image whose statistics overflowed a score keeps what its arithmetic gives
  (-log p(x) = +inf; log p(x) reversed = -inf, the blind spot it has), and where that is
  undefined (inf - inf, a density of an infinite point) the image scores +inf: infinitely
  far from the training data. NaN on an image with finite statistics is a fault and raises.
  """
  scores = applicable(scores, stats)
  num = len(np.asarray(stats['bits_per_dim'] if 'bits_per_dim' in stats else
                       next(iter(stats.values()))))
  fns = {s.name: jax.jit(s.fn) for s in scores}
  out = {s.name: [] for s in scores}
  for start in range(0, num, chunk):
    rows = _rows(stats, start, min(start + chunk, num))
    for s in scores:
      out[s.name].append(np.asarray(fns[s.name](rows, fitted[s.name]), np.float64))
  values = {name: np.concatenate(parts) for name, parts in out.items()}
  beyond_range = overflowed(stats)
  for name, v in values.items():
    undefined = np.isnan(v)
    if (undefined & ~beyond_range).any():
      raise FloatingPointError(
          f'Score {name!r} is NaN on {int((undefined & ~beyond_range).sum())} images whose '
          'statistics are all finite: a fault in the score, not in the data.')
    v[undefined] = np.inf
  return values
