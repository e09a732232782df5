"""Encoder-decoder, the inference split, greedy decoding, parameter counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding
from seqjax import summary
from seqjax import train as train_lib
from seqjax.models import ModelSettings, Seq2Seq
from tests import reference

V, H, S, T, B = 13, 24, 5, 4, 6


def _model_and_params(cell="lstm", embedding_dim=None):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, cell=cell,
                                         embedding_dim=embedding_dim))
  rng = np.random.default_rng(0)
  src = rng.integers(1, V, size=(B, S)).astype(np.int32)
  dec_in = rng.integers(0, V, size=(B, T)).astype(np.int32)
  params = model.init(jax.random.key(0), src, dec_in)
  return model, params, src, dec_in


def test_lstm_seq2seq_matches_numpy_reference():
  model, params, src, dec_in = _model_and_params()
  logits = model.apply(params, src, dec_in)
  p = params["params"]
  _, h, c = reference.lstm_numpy(p["encoder"], reference.one_hot(src, V))
  dec_out, _, _ = reference.lstm_numpy(p["decoder"],
                                       reference.one_hot(dec_in, V), h, c)
  ref = reference.dense_numpy(p["readout"], dec_out)
  np.testing.assert_allclose(logits, ref, atol=1e-4)


@pytest.mark.parametrize("cell,emb", [("lstm", None), ("gru", None),
                                      ("lstm", 8)])
def test_teacher_forced_logits_equal_decode_step_logits(cell, emb):
  model, params, src, dec_in = _model_and_params(cell, emb)
  logits = model.apply(params, src, dec_in)
  encode, decode_step = decoding.make_inference_fns(model)
  carry = encode(params, src)
  for t in range(T):
    probs, carry = decode_step(params, dec_in[:, t], carry)
    np.testing.assert_allclose(probs, jax.nn.softmax(logits[:, t]), atol=1e-5)


@pytest.mark.parametrize("cell,emb", [("lstm", None), ("gru", None),
                                      ("lstm", 8)])
def test_encode_for_decoding_equals_encode(cell, emb):
  # Rows gathered inside each step (inference) or projected first (training):
  # the same carry, with and without padding.
  model, params, src, _ = _model_and_params(cell, emb)
  mask = np.arange(S)[None] < np.array([S, 1, 3, S, 2, 4])[:, None]
  for m in (None, mask):
    expected = model.apply(params, src, m, method=Seq2Seq.encode)
    got = model.apply(params, src, m, method=Seq2Seq.encode_for_decoding)
    for e, g in zip(expected, got):
      np.testing.assert_allclose(g, e, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_final_carry_from_a_given_carry_equals_the_layer_call(cell):
  from seqjax.recurrent import make_recurrent
  layer = make_recurrent(cell, units=H, in_features=V)
  rng = np.random.default_rng(1)
  ids = rng.integers(0, V, size=(B, S)).astype(np.int32)
  mask = np.arange(S)[None] < np.array([S, 1, 3, S, 2, 4])[:, None]
  params = layer.init(jax.random.key(1), ids)
  n = 2 if cell == "lstm" else 1
  carry0 = tuple(jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
                 for _ in range(n))
  for m in (None, mask):
    _, expected = layer.apply(params, ids, carry0, m)
    got = layer.apply(params, ids, carry0, m,
                      method=lambda mod, *a: mod.final_carry(*a))
    for e, g in zip(expected, got):
      np.testing.assert_allclose(g, e, atol=1e-5)


@pytest.mark.parametrize("stop_id,early_stop", [(None, True), (3, True),
                                                (3, False)])
def test_batched_greedy_equals_step_by_step_loop(stop_id, early_stop):
  model, params, src, _ = _model_and_params()
  max_len = 7
  tokens = decoding.make_decoder(
      model, max_len=max_len, start_id=0, stop_id=stop_id,
      early_stop=early_stop)(params, src)
  encode, decode_step = decoding.make_inference_fns(model)
  for b in range(B):  # the tutorial's predict_sequence, one sequence at a time
    carry = encode(params, src[b:b + 1])
    token, expected = np.zeros((1,), np.int32), []
    for _ in range(max_len):
      probs, carry = decode_step(params, token, carry)
      token = np.asarray(probs).argmax(-1).astype(np.int32)
      expected.append(int(token[0]))
      if stop_id is not None and token[0] == stop_id:
        break
    expected += [0] * (max_len - len(expected))
    assert np.asarray(tokens[b]).tolist() == expected


def test_greedy_decode_pads_after_stop():
  model, params, src, _ = _model_and_params()
  free = np.asarray(decoding.make_decoder(
      model, max_len=9, start_id=0)(params, src))
  stop = int(free[0, 1])  # make the 2nd token of row 0 the stop token
  out = np.asarray(decoding.make_decoder(
      model, max_len=9, start_id=0, stop_id=stop)(params, src))
  for row_free, row in zip(free, out):
    hits = np.flatnonzero(row_free == stop)
    end = hits[0] + 1 if hits.size else 9
    assert row[:end].tolist() == row_free[:end].tolist()
    assert (row[end:] == 0).all()
  assert (out[0, 2:] == 0).all()


@pytest.mark.parametrize("max_len", [1, 7])
def test_greedy_decode_ends_when_every_sequence_stopped(max_len):
  # A readout biased to emit token 5 for ever: with stop_id 5 every row
  # stops at once, and the loop ends early (the rest is padding); with an
  # unreachable stop id the decoder runs all max_len steps of the same token.
  model, params, src, _ = _model_and_params()
  bias = params["params"]["readout"]["bias"]
  params = jax.tree.map(lambda x: x, params)
  params["params"]["readout"]["bias"] = bias.at[5].add(1e4)
  stopped = np.asarray(decoding.make_decoder(
      model, max_len=max_len, start_id=0, stop_id=5)(params, src))
  assert (stopped[:, 0] == 5).all() and (stopped[:, 1:] == 0).all()
  never = np.asarray(decoding.make_decoder(
      model, max_len=max_len, start_id=0, stop_id=V + 1)(params, src))
  assert (never == 5).all()


def test_decode_in_batches_pads_the_last_batch_and_matches():
  model, params, src, _ = _model_and_params()
  decoder = decoding.make_decoder(model, max_len=4, start_id=0)
  with train_lib.count_compiles(decoder) as compiles:
    whole = np.asarray(decoder(params, src))
    chunked = decoding.decode_in_batches(decoder, params, src, batch_size=4)
  np.testing.assert_array_equal(whole, chunked)
  assert compiles.count == 2  # batch 6 and batch 4, nothing more


def test_keras_parameter_count_of_the_generic_model():
  # Keras: LSTM(128) on 28 inputs = 80,384 twice, Dense(128 -> 28) = 3,612.
  model = Seq2Seq(src_vocab=28, tgt_vocab=28,
                  settings=ModelSettings(units=128))
  tok = jnp.zeros((1, 1), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tok, tok)
  assert summary.count_params(params) == 164_380
  rows = {name: count for name, _, count in summary.param_rows(params)}
  assert rows == {"encoder": 80_384, "decoder": 80_384, "readout": 3_612}
  table = summary.format_summary(params)
  assert "Total params: 164,380" in table


def test_gru_parameter_count_matches_keras_formula():
  model = Seq2Seq(src_vocab=28, tgt_vocab=28,
                  settings=ModelSettings(units=128, cell="gru"))
  tok = jnp.zeros((1, 1), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tok, tok)
  gru = 3 * (128 * 28 + 128 * 128 + 2 * 128)  # Keras GRU, reset_after=True
  assert summary.count_params(params) == 2 * gru + 128 * 28 + 28


@pytest.mark.parametrize("early_stop", [True, False])
def test_greedy_early_exit_runs_only_the_steps_until_every_row_stopped(
    early_stop):
  # The steps run, not only the tokens (the same with or without the exit):
  # with the exit, as many as the row that stops last needs (the position of
  # its stop token in the free-running decode, + 1), else max_len.
  model, params, src, _ = _model_and_params()
  max_len = 9
  free = np.asarray(decoding.make_decoder(
      model, max_len=max_len, start_id=0)(params, src))
  for stop in sorted({int(free[0, 1]), int(free[0, 0]), int(free[-1, -1])}):
    ends = [int(np.flatnonzero(row == stop)[0]) + 1 if (row == stop).any()
            else max_len for row in free]
    decode = decoding.make_decoder(
        model, max_len=max_len, start_id=0, stop_id=stop,
        early_stop=early_stop, full=True)
    tokens, steps = decode(params, src)[:2]
    assert int(steps) == (max(ends) if early_stop else max_len), (stop, ends)
    np.testing.assert_array_equal(
        tokens, decoding.make_decoder(
            model, max_len=max_len, start_id=0, stop_id=stop)(params, src))
  # Every row's first token is the stop token: one step with the exit.
  params = jax.tree.map(lambda x: x, params)
  bias = params["params"]["readout"]["bias"]
  params["params"]["readout"]["bias"] = bias.at[5].add(1e4)
  steps = decoding.decode(
      model, params, src, max_len=max_len, start_id=0, stop_id=5,
      early_stop=early_stop).steps
  assert int(steps) == (1 if early_stop else max_len)
