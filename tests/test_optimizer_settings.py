"""make_optimizer's Keras settings against hand-computed NumPy updates:
RMSprop (rho 0.9, epsilon 1e-7 added outside the square root) and Adam
(epsilon 1e-7). Gradients are small, so that epsilon decides the step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


# The optimizers of today's checkpoints: the plain optax ones of the same
# settings. Traced numbers must keep their state and their numbers.
def _plain(name, lr, clip_norm):
  tx = {"adam": lambda: optax.adam(lr, eps=1e-7),
        "rmsprop": lambda: optax.rmsprop(lr, decay=0.9, eps=1e-7,
                                         eps_in_sqrt=False),
        "sgd": lambda: optax.sgd(lr)}[name]()
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if (
      clip_norm) else tx


def _params():
  rng = np.random.default_rng(1)
  return {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
          "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}


@pytest.mark.parametrize("name", train_lib.OPTIMIZERS)
@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_traced_numbers_keep_the_plain_state_and_its_bits(name, clip_norm):
  lr, params = 0.013, _params()
  tx = train_lib.make_optimizer(name, lr, clip_norm=clip_norm)
  plain = _plain(name, lr, clip_norm)
  state, want_state = tx.init(params), plain.init(params)
  assert (jax.tree.structure(state) == jax.tree.structure(want_state))
  assert set(tx.hparams) == ({"learning_rate", "clip_norm"} if clip_norm
                             else {"learning_rate"})

  # One program for the traced update, one for the constant one.
  traced = jax.jit(lambda g, s, p, h: tx.update(g, s, p, hparams=h))
  constant = jax.jit(plain.update)
  for k in range(4):
    grads = jax.tree.map(lambda p: jnp.sin(p * (k + 1)), params)
    updates, state = traced(grads, state, params, tx.hparams)
    want, want_state = constant(grads, want_state, params)
    for a, b in zip(jax.tree.leaves((updates, state)),
                    jax.tree.leaves((want, want_state))):
      np.testing.assert_array_equal(a, b)


def test_another_learning_rate_is_an_input_not_a_new_program():
  params = _params()
  tx = train_lib.make_optimizer("adam", 0.01, clip_norm=1.0)
  traced = jax.jit(lambda g, s, p, h: tx.update(g, s, p, hparams=h))
  grads = jax.tree.map(lambda p: 3.0 * p, params)
  state = tx.init(params)
  other = {"learning_rate": jnp.float32(0.02), "clip_norm": jnp.float32(2.0)}
  got, _ = traced(grads, state, params, other)
  assert traced._cache_size() == 1  # pylint: disable=protected-access
  want, _ = jax.jit(_plain("adam", 0.02, 2.0).update)(grads, state, params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("schedule", ["plateau", "warmup_decay"])
def test_schedules_keep_their_state_and_take_the_clip_norm(schedule):
  params = _params()
  kw = dict(schedule=schedule, clip_norm=0.5, warmup_steps=2, total_steps=10)
  tx = train_lib.make_optimizer("adam", 0.01, **kw)
  assert set(tx.hparams) == ({"clip_norm"} if schedule == "plateau" else
                             {"learning_rate", "clip_norm"})
  state = tx.init(params)
  assert float(train_lib.learning_rate_of(state)) == pytest.approx(
      0.01 if schedule == "plateau" else 0.01 / 2)
  grads = jax.tree.map(lambda p: 3.0 * p, params)
  traced = jax.jit(lambda g, s, p, h: tx.update(g, s, p, hparams=h))
  # The same rate and clip norm 2.0 passed in: the optimizer made with 2.0.
  got, _ = traced(grads, state, params, {**tx.hparams,
                                         "clip_norm": jnp.float32(2.0)})
  ref = train_lib.make_optimizer("adam", 0.01, **{**kw, "clip_norm": 2.0})
  want, _ = jax.jit(ref.update)(grads, ref.init(params), params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
