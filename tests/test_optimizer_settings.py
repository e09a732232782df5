"""make_optimizer's Keras settings against hand-computed NumPy updates:
RMSprop (rho 0.9, epsilon 1e-7 added outside the square root) and Adam
(epsilon 1e-7). Gradients are small, so that epsilon decides the step."""

import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import train as train_lib

LR = 0.01


def _grads(scale):
  rng = np.random.default_rng(0)
  return [scale * rng.standard_normal(6) for _ in range(4)]


def _run(name, grads):
  tx = train_lib.make_optimizer(name, LR)
  p = jnp.zeros(6, jnp.float32)
  state = tx.init(p)
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
    p = p + updates
  return np.asarray(p, np.float64)


def _rmsprop(grads, rho=0.9, eps=1e-7, eps_inside=False):
  p, v = np.zeros(6), np.zeros(6)
  for g in grads:
    v = rho * v + (1 - rho) * g * g
    p = p - LR * g / (np.sqrt(v + eps) if eps_inside else np.sqrt(v) + eps)
  return p


def _adam(grads, b1=0.9, b2=0.999, eps=1e-7):
  p, m, v = np.zeros(6), np.zeros(6), np.zeros(6)
  for t, g in enumerate(grads, 1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - LR * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return p


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_rmsprop_is_keras_rmsprop(scale):
  grads = _grads(scale)
  got = _run("rmsprop", grads)
  np.testing.assert_allclose(got, _rmsprop(grads), rtol=2e-4)
  if scale < 1:  # epsilon inside the root, or another rho, is far off
    assert not np.allclose(got, _rmsprop(grads, rho=0.95), rtol=0.05)
    assert not np.allclose(got, _rmsprop(grads, eps_inside=True), rtol=0.05)


@pytest.mark.parametrize("scale", [1.0, 1e-7])
def test_adam_epsilon_is_keras_1e7(scale):
  grads = _grads(scale)
  got = _run("adam", grads)
  np.testing.assert_allclose(got, _adam(grads), rtol=2e-4)
  if scale < 1:  # optax's default 1e-8 would step much further
    assert not np.allclose(got, _adam(grads, eps=1e-8), rtol=0.05)
