"""The evaluation build: programs that take no parameter gradients (evaluation, attacks,
Hessians in the pixels, sampling) build the model with the kind's evaluation_fields where
the config leaves a field to its automatic choice; the train step keeps the default build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood import evaluate
from glow_ood import likelihood
from glow_ood import model_kinds
from glow_ood import sample
from glow_ood import train_state as train_state_lib
from glow_ood.experiment import model_analysis
from glow_ood.flows.glow import Glow


def test_evaluation_build_rolls_the_scan_only_where_the_config_leaves_it_open(tiny_config,
                                                                           monkeypatch):
  config = tiny_config
  assert config.model.scan_unroll is None
  assert model_kinds.build_model(config).scan_unroll is None            # the train step's
  assert model_kinds.build_model(config, evaluation=True).scan_unroll == 1
  assert evaluate.Evaluator(config).model.scan_unroll == 1
  # Every program without parameter gradients asks for the evaluation build.
  asked = []
  build = model_kinds.build_model
  monkeypatch.setattr(model_kinds, 'build_model',
                      lambda c, evaluation=False: asked.append(evaluation) or build(c, evaluation))
  evaluate.Evaluator(config)
  sample.Sampler(config)
  model_analysis.log_prob_fn(config, variables=None)
  assert asked == [True, True, True]
  monkeypatch.undo()
  config.model.scan_unroll = 2                                         # a user's choice wins
  assert model_kinds.build_model(config, evaluation=True).scan_unroll == 2
  assert evaluate.Evaluator(config).model.scan_unroll == 2


def test_evaluation_build_matches_the_train_build_to_round_off(tiny_config):
  """Same variables, same images: the Evaluator's terms, their pixel gradient and a Glow
  sample agree with the default (fully unrolled on CPU) build's."""
  config = tiny_config
  config.model.steps_per_level = 3
  evaluator = evaluate.Evaluator(config)
  images = np.random.default_rng(0).integers(0, 256, (4,) + evaluator.image_shape, np.uint8)
  first = np.concatenate([images] * (config.train.batch_size // 4 + 1))[:config.train.batch_size]
  state = train_state_lib.create_train_state(config, evaluator.mesh, jax.random.PRNGKey(0),
                                             jnp.asarray(first))
  variables = train_state_lib.eval_variables(state, config)
  default = model_kinds.build_model(config)
  assert evaluator.model.scan_unroll == 1 and default._unroll() == 3  # pylint: disable=protected-access
  key = jax.random.PRNGKey(3)

  def terms(model, x):
    evaluator.model = model
    return evaluator.terms(variables, x, key)
  x = jnp.asarray(images, jnp.float32)
  rolled, unrolled = terms(model_kinds.build_model(config, evaluation=True), x), terms(default, x)
  for name in ('log_px', 'log_pz', 'logdet_coupling', 'bits_per_dim'):
    np.testing.assert_allclose(rolled[name], unrolled[name], rtol=1e-5, atol=1e-3)
  grads = [jax.grad(lambda x, m=m: terms(m, x)['log_px'].sum())(x)
           for m in (model_kinds.build_model(config, evaluation=True), default)]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)

  # Sampling (the inverse pass) and the Hessian analysis read the same build.
  temperature = sample.temperatures(config)[0]
  drawn = sample.Sampler(config).grids(variables, jax.random.PRNGKey(5))[temperature]
  direct = default.apply(variables, jax.random.PRNGKey(5), train_state_lib.image_shape(config),
                         config.sample.num, temperature, method='sample')
  expected = sample.tile(likelihood.to_uint8(direct, config.n_bits))
  # A pixel level may differ where a sample sits on a bin edge (round-off).
  assert np.mean(drawn == expected) > 0.99
  fn = model_analysis.log_prob_fn(config, variables)
  y = jnp.asarray(images[0], jnp.float32) / 256 + 1 / 512
  np.testing.assert_allclose(
      fn(y), default.apply(variables, y[None], method=Glow.forward).log_px[0], rtol=1e-6)


def test_evaluation_fields_must_be_execution_only():
  glow = model_kinds.KINDS['glow']
  assert set(glow.evaluation_fields) <= set(glow.execution_only)
  with pytest.raises(ValueError, match='must be execution-only fields'):
    model_kinds.ModelKind('bad', Glow, 'x', 'y', execution_only=('dtype',),
                          evaluation_fields={'hidden_channels': 8})


def test_chunked_apply_returns_the_whole_batch_pass_in_batch_order():
  """Chunks are strided (image j, j + n, ...), computed in a loop and put back in order;
  a batch that is not a multiple of the chunk, or not larger, runs whole."""
  y = jnp.arange(24 * 3, dtype=jnp.float32).reshape(24, 3)
  calls = []

  def fn(batch):
    calls.append(batch.shape[0])
    return {'sum': batch.sum(axis=1), 'scaled': batch * 2.0, 'first': batch[:, 0]}
  whole = evaluate.chunked_apply(fn, y, 0)
  for chunk in (4, 6, 8, 12):
    calls.clear()
    out = evaluate.chunked_apply(fn, y, chunk)
    assert calls == [chunk]                                  # traced once, for one chunk
    for name in whole:
      np.testing.assert_array_equal(out[name], whole[name])
  np.testing.assert_array_equal(whole['first'], np.arange(24) * 3.0)
  for chunk in (5, 24, 48):                                   # not a multiple / not larger
    calls.clear()
    evaluate.chunked_apply(fn, y, chunk)
    assert calls == [24]


def test_the_evaluator_chunks_glow_on_cpu_only_and_every_value_stays_the_same(tiny_config):
  """Glow's evaluation batches run in chunks of cpu_evaluation_chunk images per device on
  CPU; the terms and their pixel gradient equal the whole-batch pass to the bit. Kinds
  that draw inside the model (the VAE) or gain nothing (PixelCNN++) run whole."""
  assert model_kinds.KINDS['glow'].cpu_evaluation_chunk == 64
  assert model_kinds.KINDS['vae'].cpu_evaluation_chunk == 0
  assert model_kinds.KINDS['pixelcnn'].cpu_evaluation_chunk == 0
  config = tiny_config
  evaluator = evaluate.Evaluator(config)
  assert evaluator.chunk == 64 * evaluator.mesh.size
  images = np.random.default_rng(0).integers(0, 256, (40,) + evaluator.image_shape, np.uint8)
  first = np.concatenate([images] * 2)[:config.train.batch_size]
  state = train_state_lib.create_train_state(config, evaluator.mesh, jax.random.PRNGKey(0),
                                             jnp.asarray(first))
  variables = train_state_lib.eval_variables(state, config)
  key = jax.random.PRNGKey(4)
  results = {}
  for chunk in (4, 0):
    evaluator.chunk, evaluator._fns = chunk, {}  # pylint: disable=protected-access
    values = evaluator(variables, images, key=key, batch_size=16)   # 3 batches, the last padded
    grad = jax.grad(lambda x: evaluator.terms(variables, x, key)['log_px'].sum())(
        jnp.asarray(images[:16], jnp.float32))
    results[chunk] = values, np.asarray(grad)
  (chunked, chunked_grad), (whole, whole_grad) = results[4], results[0]
  assert set(chunked) == set(whole) and chunked['log_pz'].shape == (40, config.model.num_levels)
  for name in whole:
    np.testing.assert_array_equal(chunked[name], whole[name])
  np.testing.assert_array_equal(chunked_grad, whole_grad)
