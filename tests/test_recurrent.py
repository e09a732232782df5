"""Cells and the scanned layer against NumPy step-by-step references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.cells import lengths_to_mask
from seqjax.recurrent import GRU, LSTM
from tests import reference

B, T, F, H = 3, 7, 11, 16


def _init(layer, x):
  params = layer.init(jax.random.key(1), x)
  # Random biases too, so a wrong bias slice cannot hide behind zeros.
  p = params["params"]
  p["bias"] = jax.random.normal(jax.random.key(2), p["bias"].shape) * 0.5
  return params


@pytest.fixture
def tokens():
  return np.random.default_rng(0).integers(0, F, size=(B, T)).astype(np.int32)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_token_inputs_match_numpy_one_hot_reference(cls, tokens):
  layer = cls(units=H, in_features=F)
  params = _init(layer, tokens)
  out, carry = layer.apply(params, tokens)
  x = reference.one_hot(tokens, F)
  if cls is LSTM:
    ref_out, h, c = reference.lstm_numpy(params["params"], x)
    np.testing.assert_allclose(carry[1], c, atol=1e-5)
  else:
    ref_out, h = reference.gru_numpy(params["params"], x)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(carry[0], h, atol=1e-5)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_dense_inputs_match_numpy_reference_with_initial_carry(cls):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  layer = cls(units=H, in_features=F)
  params = _init(layer, x)
  init = tuple(rng.normal(size=(B, H)).astype(np.float32)
               for _ in range(layer.carry_size))
  out, carry = layer.apply(params, x, initial_carry=init)
  if cls is LSTM:
    ref_out, h, c = reference.lstm_numpy(params["params"], x, *init)
  else:
    ref_out, h = reference.gru_numpy(params["params"], x, *init)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(carry[0], h, atol=1e-5)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_scan_equals_python_loop_of_step(cls, tokens):
  layer = cls(units=H, in_features=F)
  params = _init(layer, tokens)
  out, carry = layer.apply(params, tokens)
  loop_carry = layer.apply(params, B, method=cls.initial_carry)
  outs = []
  for t in range(T):
    loop_carry, h = layer.apply(params, loop_carry, tokens[:, t],
                                method=cls.step)
    outs.append(h)
  np.testing.assert_allclose(out, np.stack(outs, 1), atol=1e-6)
  for a, b in zip(carry, loop_carry):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_masked_steps_leave_carry_unchanged(cls, tokens):
  layer = cls(units=H, in_features=F)
  params = _init(layer, tokens)
  lengths = np.array([7, 3, 1])
  mask = lengths_to_mask(jnp.asarray(lengths), T)
  out, carry = layer.apply(params, tokens, mask=mask)
  for b, n in enumerate(lengths):
    # The final carry equals the carry after the real prefix alone.
    _, prefix_carry = layer.apply(params, tokens[b:b + 1, :n])
    for a, p in zip(carry, prefix_carry):
      np.testing.assert_allclose(a[b], p[0], atol=1e-6)
    # Outputs after the end repeat the last real output.
    np.testing.assert_allclose(out[b, n:], np.broadcast_to(
        out[b, n - 1], out[b, n:].shape), atol=1e-7)
  x = reference.one_hot(tokens, F)
  if cls is LSTM:
    ref_out = reference.lstm_numpy(params["params"], x, mask_BT=np.asarray(mask))[0]
  else:
    ref_out = reference.gru_numpy(params["params"], x, mask_BT=np.asarray(mask))[0]
  np.testing.assert_allclose(out, ref_out, atol=1e-5)


def test_a_fully_masked_step_is_identity_even_mid_sequence(tokens):
  layer = LSTM(units=H, in_features=F)
  params = _init(layer, tokens)
  mask = np.ones((B, T), bool)
  mask[:, 3] = False  # a hole in the middle
  _, carry = layer.apply(params, tokens, mask=mask)
  _, carry_without = layer.apply(params, np.delete(tokens, 3, axis=1))
  for a, b in zip(carry, carry_without):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_lstm_keras_layout_and_forget_bias():
  layer = LSTM(units=H, in_features=F)
  params = layer.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  assert params["kernel"].shape == (F, 4 * H)
  assert params["recurrent_kernel"].shape == (H, 4 * H)
  bias = np.asarray(params["bias"])
  np.testing.assert_array_equal(bias[H:2 * H], 1.0)  # unit_forget_bias
  np.testing.assert_array_equal(np.delete(bias, np.s_[H:2 * H]), 0.0)
  gru = GRU(units=H, in_features=F).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  assert gru["kernel"].shape == (F, 3 * H) and gru["bias"].shape == (2, 3 * H)
