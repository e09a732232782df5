"""The RepeatVector + TimeDistributed encoder-decoder: NumPy reference,
Keras parameter counts, its loss, the model-agnostic token predictor and the
--model choice of the reverse binary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import reverse
from experiments import summary as summary_exp
from seqjax import decoding
from seqjax import models
from seqjax import summary
from seqjax import train as train_lib
from seqjax.checkpoint import CheckpointMismatchError
from seqjax.models import RepeatVectorSeq2Seq
from seqjax.recurrent import LSTM
from tests import reference

V_IN, V_OUT, H, S, T, B = 12, 9, 16, 7, 4, 5


def _model_and_params(cell="lstm"):
  model = RepeatVectorSeq2Seq(src_vocab=V_IN, tgt_vocab=V_OUT, units=H,
                              out_len=T, cell=cell)
  src = np.random.default_rng(0).integers(0, V_IN, size=(B, S)).astype(np.int32)
  return model, model.init(jax.random.key(0), src), src


def _numpy_forward(p, src, cell):
  """Keras: encoder's final h, repeated T times, decoder from zeros, Dense."""
  if cell == "lstm":
    _, h, _ = reference.lstm_numpy(p["encoder"], reference.one_hot(src, V_IN))
    out, _, _ = reference.lstm_numpy(p["decoder"], np.repeat(h[:, None], T, 1))
  else:
    _, h = reference.gru_numpy(p["encoder"], reference.one_hot(src, V_IN))
    out, _ = reference.gru_numpy(p["decoder"], np.repeat(h[:, None], T, 1))
  return reference.dense_numpy(p["readout"], out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_matches_numpy_reference(cell):
  model, params, src = _model_and_params(cell)
  logits = model.apply(params, src)
  assert logits.shape == (B, T, V_OUT) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, _numpy_forward(params["params"], src, cell),
                             atol=1e-4)
  # Different rows really differ: the repeated vector carries the source.
  assert not np.allclose(logits[0], logits[1])


def test_forward_with_source_mask_matches_reference():
  model, params, src = _model_and_params()
  mask = np.arange(S)[None, :] < np.array([7, 3, 5, 1, 6])[:, None]
  p = params["params"]
  _, h, _ = reference.lstm_numpy(p["encoder"], reference.one_hot(src, V_IN),
                                 mask_BT=mask)
  out, _, _ = reference.lstm_numpy(p["decoder"], np.repeat(h[:, None], T, 1))
  np.testing.assert_allclose(model.apply(params, src, mask),
                             reference.dense_numpy(p["readout"], out), atol=1e-4)


def test_layer_repeat_equals_the_layer_on_a_repeated_input():
  layer = LSTM(units=H, in_features=6)
  x_BF = np.random.default_rng(1).normal(size=(B, 6)).astype(np.float32)
  x_BTF = np.repeat(x_BF[:, None], T, 1)
  params = layer.init(jax.random.key(0), x_BTF)
  want_out, want_carry = layer.apply(params, x_BTF)
  out, carry = layer.apply(params, x_BF, T, method=LSTM.repeat)
  np.testing.assert_allclose(out, want_out, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               carry, want_carry)


def _keras_lstm(input_dim, units):
  return 4 * (units * (input_dim + units) + units)


def test_parameter_count_equals_keras_addition_model():
  # Keras addition_rnn: LSTM(128) on 12 characters, RepeatVector(4),
  # LSTM(128, return_sequences=True), Dense(12): by hand
  # 4*(128*(12+128)+128) = 72,192; 4*(128*(128+128)+128) = 131,584;
  # 128*12+12 = 1,548; total 205,324.
  model = RepeatVectorSeq2Seq(src_vocab=12, tgt_vocab=12, units=128, out_len=4)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 7), jnp.int32))
  rows = {name: count for name, _, count in summary.param_rows(params)}
  assert rows == {"encoder": 72_192, "decoder": 131_584, "readout": 1_548}
  assert rows["encoder"] == _keras_lstm(12, 128)
  assert rows["decoder"] == _keras_lstm(128, 128)
  assert summary.count_params(params) == 205_324
  # The output length changes the shapes of the outputs, not the parameters.
  longer = RepeatVectorSeq2Seq(src_vocab=12, tgt_vocab=12, units=128, out_len=9)
  assert summary.count_params(jax.eval_shape(
      longer.init, jax.random.key(0), jnp.zeros((1, 7), jnp.int32))) == 205_324


def test_summary_shows_repeat_vector(capsys):
  n = summary_exp.run(summary_exp.SummaryConfig(input_dim=28, units=128,
                                                model="repeat_vector"))
  assert n == _keras_lstm(28, 128) + _keras_lstm(128, 128) + 128 * 28 + 28
  assert n == 215_580
  assert "repeat_vector (lstm" in capsys.readouterr().out
  assert any("--model" in e for e in summary_exp.SummaryConfig(
      model="rv").validate())


def test_loss_is_the_cross_entropy_of_one_forward_pass():
  model, params, src = _model_and_params()
  target = np.random.default_rng(2).integers(0, V_OUT, (B, T)).astype(np.int32)
  loss, aux = train_lib.make_seq2seq_loss(model)(
      params, {"src": src, "target": target})  # no dec_in needed
  logits = _numpy_forward(params["params"], src, "lstm")
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.take_along_axis(logp, target[..., None], -1).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["token_accuracy"],
                             (logits.argmax(-1) == target).mean())
  mask = np.ones((B, T), bool)
  mask[:, 2:] = False
  masked, _ = train_lib.make_seq2seq_loss(model)(
      params, {"src": src, "target": target, "target_mask": mask})
  want = -np.take_along_axis(logp, target[..., None], -1)[:, :2].mean()
  np.testing.assert_allclose(masked, want, rtol=1e-5)


def test_train_step_lowers_the_loss():
  model, params, src = _model_and_params()
  target = (src[:, :T] % V_OUT).astype(np.int32)
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam", 0.02))
  step = train_lib.jit_train_step(train_lib.make_seq2seq_loss(model))
  losses = []
  with train_lib.count_compiles(step) as compiles:
    for _ in range(40):
      state, m = step(state, {"src": src, "target": target})
      losses.append(float(m["loss"]))
  assert losses[-1] < 0.5 * losses[0] and compiles.count == 1


def test_predictor_is_the_argmax_of_one_forward_pass():
  model, params, src = _model_and_params()
  logits = np.asarray(model.apply(params, src))
  predict = decoding.make_decoder(model, max_len=T, start_id=0)
  np.testing.assert_array_equal(predict(params, src), logits.argmax(-1))
  # Steps after a stop token are padding, as in greedy decoding.
  want = logits.argmax(-1)
  stop = int(want[0, 1])
  out = np.asarray(decoding.make_decoder(
      model, max_len=T, start_id=0, stop_id=stop,
      pad_id=V_OUT - 1)(params, src))
  for row_want, row in zip(want, out):
    hits = np.flatnonzero(row_want == stop)
    end = hits[0] + 1 if hits.size else T
    assert row[:end].tolist() == row_want[:end].tolist()
    assert (row[end:] == V_OUT - 1).all()
  with pytest.raises(ValueError, match="out_len"):
    decoding.make_decoder(model, max_len=T + 1, start_id=0)(params, src)


def test_predictor_of_the_teacher_forced_model_is_greedy_decoding():
  model = models.build_seq2seq("encoder_decoder", src_vocab=V_IN,
                               tgt_vocab=V_OUT, units=H, out_len=T)
  src = np.random.default_rng(3).integers(0, V_IN, (B, S)).astype(np.int32)
  params = models.init_params(model, jax.random.key(0), src, src[:, :T] % V_OUT)
  want = decoding.make_decoder(model, max_len=T, start_id=2)(params, src)
  encode, step = decoding.make_inference_fns(model)
  carry, token = encode(params, src), np.full((B,), 2, np.int32)
  for t in range(T):  # the tutorial's step loop
    probs, carry = step(params, token, carry)
    token = np.asarray(probs).argmax(-1).astype(np.int32)
    np.testing.assert_array_equal(want[:, t], token)


def test_build_seq2seq_choices():
  assert isinstance(models.build_seq2seq(
      "repeat_vector", src_vocab=3, tgt_vocab=3, units=2, out_len=2),
      RepeatVectorSeq2Seq)
  assert isinstance(models.build_seq2seq(
      "encoder_decoder", src_vocab=3, tgt_vocab=3, units=2, out_len=2),
      models.Seq2Seq)
  with pytest.raises(ValueError, match="unknown model"):
    models.build_seq2seq("attention", src_vocab=3, tgt_vocab=3, units=2,
                         out_len=2)


# The reverse task with --model=repeat_vector.
TINY_REVERSE = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=48,
                    n_samples=12_000, batch_size=32, n_eval=300, n_examples=2,
                    log_every=100, learning_rate=0.01)


@pytest.mark.full
def test_reverse_with_repeat_vector_learns_and_keeps_models_apart(tmp_path):
  results = reverse.run(reverse.ReverseConfig(
      workdir=str(tmp_path), model="repeat_vector", **TINY_REVERSE))
  assert results["accuracy"] >= 0.9, results
  # Encoder 4*(48*(11+48)+48), decoder 4*(48*(48+48)+48), readout 48*11+11.
  assert results["n_params"] == (4 * (48 * 59 + 48) + 4 * (48 * 96 + 48)
                                 + 48 * 11 + 11)
  assert results["flags"]["model"] == "repeat_vector"
  with pytest.raises(CheckpointMismatchError,
                     match="model: checkpoint 'repeat_vector', now None"):
    reverse.run(reverse.ReverseConfig(workdir=str(tmp_path), **TINY_REVERSE))


def test_reverse_model_flag_is_validated_and_default_checkpoints_unchanged():
  assert any("--model" in e for e in reverse.ReverseConfig(
      model="rv").validate())
  # The default model writes the same checkpoint config as before the flag.
  assert "model" not in reverse.ReverseConfig().model_config()
  assert reverse.ReverseConfig(model="repeat_vector").model_config()[
      "model"] == "repeat_vector"
