"""The fast conv formulations equal XLA's convolution, values and gradients."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glow_ood.flows.conv import (conv1x1, conv1x1_channels_first, conv3x3,
                                 conv3x3_channels_first)
from glow_ood.flows.coupling import GlowCouplingNet


def _xla_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _value_and_grads(conv, x, kernel, probe):
  loss = lambda x, k: jnp.sum(jnp.sin(conv(x, k)) * probe)
  return conv(x, kernel), jax.grad(loss, argnums=(0, 1))(x, kernel)


def _channels_first(conv):
  """A channels-first conv seen from channels-last arrays."""
  return lambda x, k: jnp.transpose(conv(jnp.transpose(x, (3, 0, 1, 2)), k), (1, 2, 3, 0))


def test_channels_first_products_read_a_materialised_transposed_kernel():
  """The forward products are plain [M, K] @ [K, N] in the compiled program: XLA keeps the
  kernel's transpose as its own array instead of folding it into the dot (contracting the
  kernel's first axis), a form its CPU backend runs as a slower generic dot."""
  with jax.default_device(jax.devices('cpu')[0]):   # the CPU backend's program, on any host
    cases = [(conv3x3_channels_first, (jnp.ones((4, 2, 8, 8)), jnp.ones((3, 3, 4, 16)))),
             (conv1x1_channels_first, (jnp.ones((16, 2, 8, 8)), jnp.ones((16, 24))))]
    for conv, args in cases:
      hlo = jax.jit(conv).lower(*args).compile().as_text()
      dims = re.findall(r' dot\(.*?lhs_contracting_dims=\{(\d)\}, rhs_contracting_dims=\{(\d)\}',
                        hlo)
      assert dims == [('1', '0')], (conv.__name__, dims)
    # The same product written with a bare kernel.T is the folded form this guards against.
    folded = jax.jit(lambda x, k: jax.lax.dot_general(k.T, x, (((1,), (0,)), ((), ())))).lower(
        jnp.ones((16, 128)), jnp.ones((16, 24))).compile().as_text()
    assert re.findall(r' dot\(.*?lhs_contracting_dims=\{(\d)\}', folded) == ['0']


@pytest.mark.parametrize('cin, cout', [
    (2, 64),    # the coupling net's first conv: patches side
    (6, 12),
    (64, 4),    # its zero-initialised last conv: partial-outputs side
    (24, 12),   # wider output: XLA conv
    (40, 8),
    (5, 5),
])
@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('layout', ['channels_last', 'channels_first'])
def test_conv3x3_equals_xla_conv_in_float32(cin, cout, jit, layout):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 5, 7, cin))  # H != W catches swapped axes
  kernel = jax.random.normal(keys[1], (3, 3, cin, cout)) / np.sqrt(9 * cin)
  probe = jax.random.normal(keys[2], (2, 5, 7, cout))
  conv = conv3x3 if layout == 'channels_last' else _channels_first(conv3x3_channels_first)
  ours_fn = jax.jit(conv) if jit else conv
  ours, ours_grads = _value_and_grads(ours_fn, x, kernel, probe)
  ref, ref_grads = _value_and_grads(_xla_conv, x, kernel, probe)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(ours_grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('cin, cout', [(3, 16), (16, 4)])
def test_conv3x3_second_derivative_equals_xla_conv(cin, cout):
  """The hand-written gradients are themselves differentiable (e.g. for Hessian probes)."""
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(1), 2)
    x = jax.random.normal(keys[0], (1, 4, 3, cin), jnp.float64)
    kernel = jax.random.normal(keys[1], (3, 3, cin, cout), jnp.float64)
    hess = lambda conv: jax.hessian(lambda x: jnp.sum(jnp.tanh(conv(x, kernel))))(x)
    np.testing.assert_allclose(hess(conv3x3), hess(_xla_conv), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('cin, cout', [(2, 32), (32, 4)])
def test_conv3x3_keeps_bfloat16(cin, cout):
  x = jax.random.normal(jax.random.key(2), (2, 4, 4, cin))
  kernel = jax.random.normal(jax.random.key(3), (3, 3, cin, cout)) / np.sqrt(9 * cin)
  y = conv3x3(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  grads = jax.grad(lambda x, k: jnp.sum(conv3x3(x, k).astype(jnp.float32)), argnums=(0, 1))(
      x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
  np.testing.assert_allclose(y.astype(jnp.float32), _xla_conv(x, kernel), rtol=0.05, atol=0.05)


def _plain_1x1(x, kernel):
  return x @ kernel


@pytest.mark.parametrize('jit', [False, True])
def test_conv1x1_equals_plain_product_in_float32(jit):
  keys = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(keys[0], (2, 5, 7, 6))
  kernel = jax.random.normal(keys[1], (6, 9)) / np.sqrt(6)
  probe = jax.random.normal(keys[2], (2, 5, 7, 9))
  ours, ours_grads = _value_and_grads(jax.jit(conv1x1) if jit else conv1x1, x, kernel, probe)
  ref, ref_grads = _value_and_grads(_plain_1x1, x, kernel, probe)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
  for a, b in zip(ours_grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv1x1_forward_mode_and_second_derivatives_equal_plain_product():
  """The custom tangent is exact in forward mode and differentiable again, in x and kernel."""
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(5), 4)
    x = jax.random.normal(keys[0], (1, 3, 2, 4), jnp.float64)
    kernel = jax.random.normal(keys[1], (4, 5), jnp.float64)
    dx = jax.random.normal(keys[2], x.shape, jnp.float64)
    dk = jax.random.normal(keys[3], kernel.shape, jnp.float64)
    jvps = [jax.jvp(f, (x, kernel), (dx, dk)) for f in (conv1x1, _plain_1x1)]
    np.testing.assert_allclose(jvps[0][1], jvps[1][1], rtol=1e-12, atol=1e-12)
    hess = lambda f: jax.hessian(lambda x, k: jnp.sum(jnp.tanh(f(x, k))), argnums=(0, 1))(x, kernel)
    for a, b in zip(jax.tree.leaves(hess(conv1x1)), jax.tree.leaves(hess(_plain_1x1))):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_conv1x1_keeps_bfloat16():
  x = jax.random.normal(jax.random.key(6), (2, 4, 4, 8)).astype(jnp.bfloat16)
  kernel = (jax.random.normal(jax.random.key(7), (8, 8)) / np.sqrt(8)).astype(jnp.bfloat16)
  grads = jax.grad(lambda x, k: jnp.sum(conv1x1(x, k).astype(jnp.float32)), argnums=(0, 1))(x, kernel)
  assert conv1x1(x, kernel).dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)


def test_channels_first_convs_second_derivatives_equal_xla():
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(5), 4)
    for cin, cout in ((3, 8), (8, 3)):
      x = jax.random.normal(keys[0], (1, 4, 3, cin), jnp.float64)
      kernel = jax.random.normal(keys[1], (3, 3, cin, cout), jnp.float64)
      hess = lambda conv: jax.hessian(lambda x: jnp.sum(jnp.tanh(conv(x, kernel))))(x)
      np.testing.assert_allclose(hess(_channels_first(conv3x3_channels_first)), hess(_xla_conv),
                                 rtol=1e-9, atol=1e-9)
    x = jax.random.normal(keys[2], (2, 3, 3, 4), jnp.float64)
    kernel = jax.random.normal(keys[3], (4, 6), jnp.float64)
    hess = lambda conv: jax.hessian(lambda k: jnp.sum(jnp.tanh(conv(x, k))))(kernel)
    np.testing.assert_allclose(hess(_channels_first(conv1x1_channels_first)), hess(_plain_1x1),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('cin, hidden, cout', [(1, 8, 4), (6, 16, 12), (3, 8, 2)])
def test_glow_net_channels_first_equals_channels_last_in_float64(cin, hidden, cout):
  """Same parameter tree, same values and gradients (float64: the only difference is
  the order of the sums)."""
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(6), (2, 6, 5, cin), jnp.float64)
    nets = [GlowCouplingNet(hidden, cout, channels_first=cf) for cf in (False, True)]
    variables = nets[0].init(jax.random.key(7), x)
    assert (jax.tree.structure(nets[1].init(jax.random.key(7), x))
            == jax.tree.structure(variables))
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(8), len(leaves))
    variables = jax.tree.unflatten(treedef, [  # off the zero init of the last conv
        v + 0.3 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys)])
    outs = [jax.jit(net.apply)(variables, x) for net in nets]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    grads = [jax.jit(jax.grad(lambda v, x, net=net: jnp.sum(jnp.sin(net.apply(v, x))),
                              argnums=(0, 1)))(variables, x) for net in nets]
    for a, b in zip(jax.tree.leaves(grads[1]), jax.tree.leaves(grads[0])):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
