"""Gradients of the layers' hand-written backward passes.

Two independent references: JAX autodiff of a plain Python loop over the
public step functions ``lstm_update`` / ``gru_update``, elementwise; and
float64 NumPy central differences of the NumPy reference along random
directions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.cells import lengths_to_mask
from seqjax.recurrent import GRU, LSTM
from tests import reference
from tests import tiers

B, T, F, H = 3, 5, 7, 8


def _setup(cls, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  layer = cls(units=H, in_features=F)
  params = layer.init(jax.random.key(seed), x)
  p = dict(params["params"])
  p["bias"] = jax.random.normal(jax.random.key(seed + 1), p["bias"].shape) * 0.5
  init = tuple(rng.normal(size=(B, H)).astype(np.float32)
               for _ in range(layer.carry_size))
  # Weights of a scalar loss on every output and on the final carry, so
  # each cotangent path of the backward pass is exercised.
  w_out = rng.normal(size=(B, T, H)).astype(np.float32)
  w_carry = tuple(rng.normal(size=(B, H)).astype(np.float32) for _ in init)
  return layer, {"params": p}, x, init, w_out, w_carry


def _loss(out, carry, w_out, w_carry):
  return (out * w_out).sum() + sum((c * w).sum() for c, w in zip(carry, w_carry))


def _loop_forward(cls, p, x, init, mask):
  """A Python loop over the public update function: autodiff's reference."""
  update = cls.update
  if cls is LSTM:
    recurrent = {"recurrent_kernel": p["recurrent_kernel"]}
    bias = p["bias"]
  else:
    recurrent = {"recurrent_kernel": p["recurrent_kernel"],
                 "recurrent_bias": p["bias"][1]}
    bias = p["bias"][0]
  carry, outs = tuple(init), []
  for t in range(x.shape[1]):
    new = update(recurrent, carry, x[:, t] @ p["kernel"] + bias)
    if mask is not None:
      new = tuple(jnp.where(mask[:, t, None], n, o) for n, o in zip(new, carry))
    carry = new
    outs.append(carry[0])
  return jnp.stack(outs, 1), carry


MASKS = {"none": None,
         "lengths": np.asarray(lengths_to_mask(jnp.array([5, 2, 1]), T)),
         "holes": np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 0, 0]],
                           bool)}


GRAD_CASES = [(cls, mask_name, start) for cls in (LSTM, GRU)
              for mask_name, start in [("none", "given"), ("lengths", "zeros"),
                                       ("holes", "given"), ("holes", "zeros")]]


# Each mask and start in the fast tier with one of the cells, in turn.
@pytest.mark.parametrize("cls,mask_name,start", tiers.tiered(
    GRAD_CASES, tiers.rotating(GRAD_CASES, lambda c: c[1:]),
    lambda c: f"{c[0].__name__}-{c[1]}-{c[2]}", unpack=True))
def test_gradients_match_autodiff_of_the_step_loop(cls, mask_name, start):
  # "zeros": no initial carry (undifferentiated, its first step skips
  # h @ U: the loss values are compared too); "holes" masks some first steps.
  layer, params, x, init, w_out, w_carry = _setup(cls)
  mask = MASKS[mask_name]
  if start == "zeros":
    init = tuple(np.zeros_like(c) for c in init)

  def layer_loss(params, x, init):
    out, carry = layer.apply(params, x, mask=mask,
                             initial_carry=init if start == "given" else None)
    return _loss(out, carry, w_out, w_carry)

  def loop_loss(params, x, init):
    out, carry = _loop_forward(cls, params["params"], x, init, mask)
    return _loss(out, carry, w_out, w_carry)

  argnums = (0, 1, 2) if start == "given" else (0, 1)
  got = jax.jit(jax.grad(layer_loss, argnums=argnums))(params, x, init)
  want = jax.jit(jax.grad(loop_loss, argnums=argnums))(params, x, init)
  assert type(layer).sequence is not None  # the hand-written path is tested
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
  # The values the gradients belong to agree as well.
  np.testing.assert_allclose(jax.jit(layer_loss)(params, x, init),
                             jax.jit(loop_loss)(params, x, init), rtol=1e-5)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_directional_derivatives_match_numpy_central_differences(cls):
  layer, params, x, init, w_out, w_carry = _setup(cls, seed=3)
  mask = MASKS["lengths"]
  ids = np.random.default_rng(4).integers(0, F, size=(B, T)).astype(np.int32)

  def jax_loss(p, init):
    out, carry = layer.apply({"params": p}, ids, initial_carry=init, mask=mask)
    return _loss(out, carry, w_out, w_carry)

  def numpy_loss(p, init):
    xs = reference.one_hot(ids, F)
    if cls is LSTM:
      out, h, c = reference.lstm_numpy(p, xs, *init, mask_BT=mask)
      carry = (h, c)
    else:
      out, h = reference.gru_numpy(p, xs, *init, mask_BT=mask)
      carry = (h,)
    return _loss(out, carry, np.float64(w_out), [np.float64(w) for w in w_carry])

  p = params["params"]
  grads = jax.jit(jax.grad(jax_loss, argnums=(0, 1)))(p, init)
  rng = np.random.default_rng(5)
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  init64 = tuple(np.asarray(c, np.float64) for c in init)
  for _ in range(3):
    v = jax.tree.map(lambda a: rng.normal(size=a.shape), (p64, init64))
    eps = 1e-5
    plus = jax.tree.map(lambda a, d: a + eps * d, (p64, init64), v)
    minus = jax.tree.map(lambda a, d: a - eps * d, (p64, init64), v)
    numeric = (numpy_loss(*plus) - numpy_loss(*minus)) / (2 * eps)
    analytic = sum(float((np.asarray(g, np.float64) * d).sum()) for g, d in
                   zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-4)


def test_sequence_functions_agree_with_the_update_loop_in_bfloat16():
  # A lower compute dtype goes through the same path; outputs keep it.
  layer = LSTM(units=H, in_features=F, dtype=jnp.bfloat16)
  ids = np.random.default_rng(6).integers(0, F, size=(B, T)).astype(np.int32)
  params = layer.init(jax.random.key(0), ids)
  out, carry = jax.jit(layer.apply)(params, ids)
  assert out.dtype == jnp.bfloat16 and carry[1].dtype == jnp.bfloat16
  ref_out, _, _ = reference.lstm_numpy(params["params"],
                                       reference.one_hot(ids, F))
  np.testing.assert_allclose(np.float32(out), ref_out, atol=3e-2)
  grads = jax.jit(jax.grad(
      lambda p: layer.apply(p, ids)[0].astype(jnp.float32).sum()))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  # The backward pass in bfloat16 against float32's, leaf by leaf, with the
  # same float32 parameters: within bfloat16's precision (3 digits, summed
  # over T steps), and each leaf really differentiated.
  layer32 = LSTM(units=H, in_features=F)
  grads32 = jax.jit(jax.grad(lambda p: layer32.apply(p, ids)[0].sum()))(params)
  for path, g, g32 in zip(jax.tree_util.tree_leaves_with_path(grads),
                          jax.tree.leaves(grads), jax.tree.leaves(grads32)):
    g, g32 = np.float64(g), np.float64(g32)
    err = np.linalg.norm(g - g32) / np.linalg.norm(g32)
    assert np.linalg.norm(g32) > 0 and err < 0.05, (path[0], err)


@pytest.mark.parametrize("steps", [1, 12])
def test_long_and_single_step_sequences_match_the_loop(steps):
  # The one-step edge case, and a longer sequence.
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, steps, F)).astype(np.float32)
  layer = LSTM(units=H, in_features=F)
  params = layer.init(jax.random.key(0), x)

  def loss(p, fwd):
    out, carry = fwd(p, x)
    return (out ** 2).sum() + carry[1].sum()
  layer_fwd = lambda p, x: layer.apply(p, x)
  loop_fwd = lambda p, x: _loop_forward(
      LSTM, p["params"], x, (jnp.zeros((2, H)),) * 2, None)
  got = jax.jit(jax.grad(lambda p: loss(p, layer_fwd)))(params)
  want = jax.jit(jax.grad(lambda p: loss(p, loop_fwd)))(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
