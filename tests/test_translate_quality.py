"""The glue of benchmarks/translate_quality.py and its Keras peer: encoding
as the Keras example, greedy decoding's stop rule, scoring on one set of
references. No training, no timing."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest
import sacrebleu

from benchmarks import translate_quality
from seqjax import evaluate

PAIRS = [("Hi.", "嗨。"), ("Run!", "跑！"), ("Go.", "走。")]


def test_score_both_uses_the_same_references():
  refs = ["嗨。", "跑！", "走。"]
  scores = translate_quality.score_both(
      refs, {"a": ["嗨。", "跑", "x"], "b": list(refs)})
  assert scores["a"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(
      ["嗨。", "跑", "x"], [refs], tokenize="zh").score)
  assert scores["a"]["chrf"] == pytest.approx(
      sacrebleu.corpus_chrf(["嗨。", "跑", "x"], [refs]).score)
  assert scores["a"]["exact_match"] == pytest.approx(1 / 3)
  assert scores["b"]["exact_match"] == 1.0
  assert scores["b"]["chrf"] == pytest.approx(100.0)
  assert scores == {k: evaluate.score(h, refs) for k, h in
                    {"a": ["嗨。", "跑", "x"], "b": refs}.items()}
  with pytest.raises(ValueError, match="2 hypotheses for 3"):
    translate_quality.score_both(refs, {"short": ["嗨。", "跑"]})


def _peer():
  pytest.importorskip("keras")
  from benchmarks.peers import keras_translate
  return keras_translate


@pytest.mark.full
def test_one_hot_arrays_follow_the_keras_example():
  kt = _peer()
  # Held-out "Hop." has an 'o' and 'p' never seen in training: 'p' unknown.
  tables = kt.char_tables(PAIRS[:2], PAIRS[:2] + [("Hop.", "跳。")])
  assert tables.input_chars == sorted(set(" Hi.Run!"))
  assert tables.target_chars == sorted(set("\t\n 嗨。跑！"))
  assert tables.max_encoder_len == 4 and tables.max_decoder_len == 4
  enc = kt.one_hot_inputs(tables, ["Hi.", "Hp."])
  idx = tables.input_index
  assert enc.shape == (2, 4, len(tables.input_chars))
  assert [int(np.argmax(r)) for r in enc[0]] == [idx[c] for c in "Hi. "]
  assert enc[1, 1].sum() == 0.0   # 'p': unknown, an all-zero row
  assert enc.sum(-1).tolist() == [[1, 1, 1, 1], [1, 0, 1, 1]]
  dec_in, dec_tgt = kt.one_hot_targets(tables, ["嗨。"])
  tid = tables.target_index
  assert [int(np.argmax(r)) for r in dec_in[0]] == [tid[c] for c in "\t嗨。\n"]
  # The target is the input one step ahead, padded with spaces.
  dec_in2, dec_tgt2 = kt.one_hot_targets(tables, ["嗨"])
  assert [int(np.argmax(r)) for r in dec_in2[0]] == [tid[c]
                                                     for c in "\t嗨\n "]
  assert [int(np.argmax(r)) for r in dec_tgt2[0]] == [tid[c]
                                                      for c in "嗨\n  "]


@pytest.mark.full
def test_peer_model_sizes_and_greedy_stop_rule():
  kt = _peer()
  tables = kt.char_tables(PAIRS, PAIRS)
  n_in, n_out, units = len(tables.input_chars), len(tables.target_chars), 8
  model, enc_model, dec_model = kt.build_models(n_in, n_out, units)
  # Two LSTMs (4 gates: input kernel, recurrent kernel, bias) and the Dense.
  lstm = lambda f: 4 * units * (f + units + 1)
  assert model.count_params() == (lstm(n_in) + lstm(n_out)
                                  + (units + 1) * n_out)
  dense = model.layers[-1]
  kernel, bias = dense.get_weights()
  src = kt.one_hot_inputs(tables, [s for s, _ in PAIRS])
  # A bias that makes "\n" the argmax everywhere: every sentence stops at once.
  stop_bias = np.zeros_like(bias)
  stop_bias[tables.target_index["\n"]] = 1e3
  dense.set_weights([kernel * 0, stop_bias])
  assert kt.greedy_decode(enc_model, dec_model, tables, src) == ["", "", ""]
  # One that makes "跑": no stop, so the maximum length.
  run_bias = np.zeros_like(bias)
  run_bias[tables.target_index["跑"]] = 1e3
  dense.set_weights([kernel * 0, run_bias])
  assert kt.greedy_decode(enc_model, dec_model, tables, src, batch_size=2) \
      == ["跑" * tables.max_decoder_len] * 3
