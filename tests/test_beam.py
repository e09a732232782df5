"""Beam search against exhaustive enumeration of every output sequence, a
per-sentence Python beam search, greedy decoding, and teacher-forced scores
of the hypotheses it returns."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding
from seqjax.errors import ParameterError
from seqjax.models import ModelSettings, RepeatVectorSeq2Seq, Seq2Seq
from tests import seq2seq_reference as ref
from tests import tiers

START, STOP, PAD = 1, 2, 0
LENGTHS = np.array([5, 2, 4])

ARCHITECTURES = {
    "plain_lstm": dict(),
    "gru_embedding": dict(cell="gru", embedding_dim=4),
    "luong_feeding_bidirectional": dict(attention="luong", bidirectional=True),
    "bahdanau_two_layers": dict(attention="bahdanau", decoder_layers=2,
                                encoder_layers=2),
    "luong_dot_no_feeding": dict(attention="luong", attention_score="dot",
                                 input_feeding=False),
}


def _setup(arch, vocab=5, units=6, seed=0, src_len=5):
  model = Seq2Seq(src_vocab=7, tgt_vocab=vocab,
                  settings=ModelSettings(units=units, **ARCHITECTURES[arch]))
  rng = np.random.default_rng(seed)
  # Padding holds real tokens: only the mask can hide it.
  src_BS = rng.integers(1, 7, size=(len(LENGTHS), src_len)).astype(np.int32)
  mask_BS = np.arange(src_len)[None] < LENGTHS[:, None]
  params = ref.random_params(model, src_BS[:1], src_BS[:1, :2], seed=seed)
  return model, params, src_BS, mask_BS


def _search(model, params, src_BS, mask_BS, *, beam_size, length_penalty=0.0,
            n_best=1, **kw):
  kw = dict(dict(start_id=START, stop_id=STOP, pad_id=PAD), **kw)
  strategy = decoding.BeamSearch(beam_size, length_penalty, n_best)
  fn = decoding.make_decoder(model, strategy, full=True, **kw)
  return jax.device_get(fn(params, src_BS, mask_BS))


def _teacher_forced_logp(model, params, src_BS, mask_BS, seqs):
  """log P(seq | src) of every (sentence, sequence), each sequence fed to
  the whole-sequence (teacher-forced) model: float64 sums -> (B, len)."""
  seqs = [list(s) for s in seqs]
  width = max(len(s) for s in seqs)
  out_YT = np.full((len(seqs), width), PAD, np.int32)
  for i, s in enumerate(seqs):
    out_YT[i, :len(s)] = s
  dec_in_YT = np.concatenate([np.full((len(seqs), 1), START, np.int32),
                              out_YT[:, :-1]], axis=1)
  logp = np.zeros((len(src_BS), len(seqs)))
  for b in range(len(src_BS)):
    src = np.repeat(src_BS[b:b + 1], len(seqs), 0)
    mask = np.repeat(mask_BS[b:b + 1], len(seqs), 0)
    logits = np.asarray(model.apply(params, src, dec_in_YT, mask), np.float64)
    logp_YTV = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for i, s in enumerate(seqs):
      logp[b, i] = sum(logp_YTV[i, t, tok] for t, tok in enumerate(s))
  return logp


def _all_sequences(vocab, max_len):
  """Every output: ends at its first stop token, or is cut at max_len."""
  symbols = [v for v in range(vocab) if v != STOP]
  seqs = []
  for length in range(1, max_len + 1):
    for body in itertools.product(symbols, repeat=length - 1):
      seqs.append(body + (STOP,))
      if length == max_len:
        seqs.extend(body + (v,) for v in symbols)
  return seqs


def _penalty(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


@pytest.mark.full
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_as_wide_as_all_sequences_finds_exhaustive_best(arch, alpha):
  vocab, max_len = 4, 4
  model, params, src_BS, mask_BS = _setup(arch, vocab=vocab)
  seqs = _all_sequences(vocab, max_len)
  logp = _teacher_forced_logp(model, params, src_BS, mask_BS, seqs)
  score = logp / _penalty(np.array([len(s) for s in seqs]), alpha)
  beams = _search(model, params, src_BS, mask_BS, beam_size=len(seqs),
                  max_len=max_len, length_penalty=alpha, n_best=3)
  for b in range(len(src_BS)):
    order = np.argsort(-score[b], kind="stable")[:3]
    for n, i in enumerate(order):
      want = list(seqs[i]) + [PAD] * (max_len - len(seqs[i]))
      assert beams.tokens_BNT[b, n].tolist() == want, (b, n)
      np.testing.assert_allclose(beams.scores_BN[b, n], score[b, i],
                                 rtol=2e-5, atol=1e-5)
      assert beams.lengths_BN[b, n] == len(seqs[i])


def _python_beam(model, params, src, mask, k, max_len, alpha):
  """One sentence, one hypothesis at a time: the search the module
  docstring describes, with Python lists -> [(score, tokens)] best first."""
  state0 = model.apply(params, src[None], mask[None],
                       method=Seq2Seq.encode_for_decoding)
  step = jax.jit(lambda tok, st: model.apply(params, tok, st,
                                             method=Seq2Seq.decode_step))
  alive = [(0.0, [], state0)]
  finished = []
  for t in range(max_len):
    cands = []
    for logp, toks, state in alive:
      last = toks[-1] if toks else START
      logits, new_state = step(jnp.array([last], jnp.int32), state)
      lp = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32)))
      cands += [(logp + lp[v], toks + [v], new_state) for v in range(len(lp))]
    cands.sort(key=lambda c: -c[0])
    cands = cands[:2 * k]
    ends = [c for c in cands[:k] if c[1][-1] == STOP or t == max_len - 1]
    finished += [(c[0] / _penalty(t + 1, alpha), c[1]) for c in ends]
    finished = sorted(finished, key=lambda f: -f[0])[:k]
    alive = [c for c in cands if not (c[1][-1] == STOP
                                      or t == max_len - 1)][:k]
    if len(finished) == k and all(
        a[0] / _penalty(max_len, alpha) <= finished[-1][0] for a in alive):
      break
  return finished


@pytest.mark.parametrize("arch", ["plain_lstm", "luong_feeding_bidirectional"])
def test_batched_search_equals_python_beam_per_sentence(arch):
  k, max_len, alpha = 3, 6, 0.6
  model, params, src_BS, mask_BS = _setup(arch, vocab=9, seed=3)
  beams = _search(model, params, src_BS, mask_BS, beam_size=k,
                  max_len=max_len, length_penalty=alpha, n_best=k)
  for b in range(len(src_BS)):
    want = _python_beam(model, params, src_BS[b], mask_BS[b], k, max_len,
                        alpha)
    for n, (score, toks) in enumerate(want):
      got = beams.tokens_BNT[b, n].tolist()
      assert got[:len(toks)] == toks and set(got[len(toks):]) <= {PAD}
      np.testing.assert_allclose(beams.scores_BN[b, n], score, rtol=1e-5)


def _stop_bias(params, bias):
  """``params`` with the stop token's readout bias raised by ``bias``."""
  params = jax.tree.map(lambda x: x, params)  # a copy to change
  readout = params["params"]["readout"]
  readout["bias"] = readout["bias"].at[STOP].add(bias)
  return params


# The fast tier: the plain model, attention with input feeding and a
# bidirectional encoder, and two layers; the full tier adds the GRU with
# embeddings and the dot score without feeding.
@pytest.mark.parametrize("arch", tiers.tiered(
    list(ARCHITECTURES), {0, 2, 3}, str))
def test_beam_one_is_greedy(arch):
  model, params, src_BS, mask_BS = _setup(arch, vocab=11, seed=1, src_len=6)
  rng = np.random.default_rng(5)
  src_BS = rng.integers(1, 7, size=(16, 6)).astype(np.int32)
  mask_BS = np.arange(6)[None] < rng.integers(1, 7, size=16)[:, None]
  greedy = decoding.make_decoder(model, max_len=8, start_id=START,
                                 stop_id=STOP, pad_id=PAD)
  beam = decoding.make_decoder(model, decoding.BeamSearch(1), max_len=8,
                               start_id=START, stop_id=STOP, pad_id=PAD)
  # The first stop bias at which sentences stop at different steps (so
  # stopping is exercised), or some never do.
  for bias in np.arange(0.0, 6.0, 0.5):
    want = np.asarray(greedy(_stop_bias(params, bias), src_BS, mask_BS))
    stopped_at = {row.tolist().index(STOP) if STOP in row else -1
                  for row in want}
    if len(stopped_at) >= 3:
      break
  assert len(stopped_at) >= 3, want
  got = beam(_stop_bias(params, bias), src_BS, mask_BS)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_scores_are_sums_of_step_log_probs_with_the_penalty():
  model, params, src_BS, mask_BS = _setup("luong_feeding_bidirectional",
                                          vocab=8, seed=2)
  alpha, max_len = 0.8, 7
  beams = _search(model, params, src_BS, mask_BS, beam_size=4,
                  max_len=max_len, length_penalty=alpha, n_best=4)
  for b in range(len(src_BS)):
    hyps = []
    for n in range(4):
      toks = beams.tokens_BNT[b, n].tolist()
      length = int(beams.lengths_BN[b, n])
      # A finished hypothesis was not extended: padding after its stop.
      if STOP in toks:
        assert toks.index(STOP) + 1 == length
      else:
        assert length == max_len
      assert set(toks[length:]) <= {PAD}
      hyps.append(toks[:length])
    # The sentence's 4 hypotheses teacher-forced in one batch (each sum
    # reads only its own positions).
    logp_N = _teacher_forced_logp(model, params, src_BS[b:b + 1],
                                  mask_BS[b:b + 1], hyps)[0]
    for n, hyp in enumerate(hyps):
      np.testing.assert_allclose(beams.log_probs_BN[b, n], logp_N[n],
                                 rtol=1e-5)
      np.testing.assert_allclose(beams.scores_BN[b, n],
                                 logp_N[n] / _penalty(len(hyp), alpha),
                                 rtol=1e-5)
    assert np.all(np.diff(beams.scores_BN[b]) <= 0)  # best first


EARLY_STOP_CASES = [(alpha, n_best) for alpha in (0.0, 0.6, 2.0)
                    for n_best in (1, 3)]


# Each penalty in the fast tier with one of the n_best, in turn.
@pytest.mark.parametrize("alpha,n_best", tiers.tiered(
    EARLY_STOP_CASES, tiers.rotating(EARLY_STOP_CASES, lambda c: c[0]),
    lambda c: f"{c[0]}-{c[1]}", unpack=True))
def test_early_stop_gives_the_full_length_result_in_fewer_steps(alpha,
                                                                 n_best):
  model, params, _, _ = _setup("plain_lstm", vocab=6, seed=4)
  rng = np.random.default_rng(7)
  src_BS = rng.integers(1, 7, size=(32, 5)).astype(np.int32)
  mask_BS = np.arange(5)[None] < rng.integers(1, 6, size=32)[:, None]
  params = _stop_bias(params, 2.0)
  kw = dict(beam_size=3, max_len=12, n_best=n_best, length_penalty=alpha)
  early = _search(model, params, src_BS, mask_BS, **kw)
  full = _search(model, params, src_BS, mask_BS, early_stop=False, **kw)
  for a, b in zip(early[:-1], full[:-1]):
    np.testing.assert_array_equal(a, b)
  assert full.steps == 12
  if alpha < 1:  # a large penalty keeps long hypotheses in the running
    assert early.steps < 12


def test_padded_source_positions_do_not_change_results():
  model, params, src_BS, mask_BS = _setup("luong_feeding_bidirectional",
                                          vocab=8, seed=6)
  kw = dict(beam_size=3, max_len=6, n_best=3, length_penalty=0.5)
  narrow = _search(model, params, src_BS, mask_BS, **kw)
  rng = np.random.default_rng(0)
  wide_BS = np.concatenate(
      [src_BS, rng.integers(1, 7, size=(len(src_BS), 4)).astype(np.int32)], 1)
  wide_mask = np.concatenate([mask_BS, np.zeros((len(src_BS), 4), bool)], 1)
  wide = _search(model, params, wide_BS, wide_mask, **kw)
  np.testing.assert_array_equal(wide.tokens_BNT, narrow.tokens_BNT)
  np.testing.assert_allclose(wide.scores_BN, narrow.scores_BN, rtol=1e-5)


def test_without_a_stop_token_every_hypothesis_has_max_len_tokens():
  model, params, src_BS, mask_BS = _setup("plain_lstm", vocab=5)
  beams = _search(model, params, src_BS, mask_BS, beam_size=25, max_len=2,
                  n_best=25, stop_id=None)
  # Exactly the 25 sequences of 2 tokens, best first.
  seqs = list(itertools.product(range(5), repeat=2))
  logp = _teacher_forced_logp(model, params, src_BS, mask_BS, seqs)
  for b in range(len(src_BS)):
    assert sorted(map(tuple, beams.tokens_BNT[b].tolist())) == sorted(seqs)
    np.testing.assert_allclose(beams.scores_BN[b], np.sort(logp[b])[::-1],
                               rtol=2e-5)
  assert beams.steps == 2


def test_decoder_compiles_once_per_shape():
  model, params, src_BS, mask_BS = _setup("plain_lstm")
  decode = decoding.make_decoder(model, decoding.BeamSearch(2), max_len=5,
                                 start_id=START, stop_id=STOP)
  decode(params, src_BS, mask_BS)
  decode(params, src_BS[::-1].copy(), mask_BS[::-1].copy())
  assert decode._cache_size() == 1


@pytest.mark.parametrize("kw, param", [
    (dict(beam_size=0), "beam_size"),
    (dict(beam_size=2, n_best=3), "n_best"),
    (dict(beam_size=2, n_best=0), "n_best"),
    (dict(beam_size=2, length_penalty=-0.1), "length_penalty"),
    (dict(beam_size=2, length_penalty=float("nan")), "length_penalty"),
    (dict(beam_size=6, vocab=5), "beam_size"),
])
def test_bad_settings_name_the_parameter(kw, param):
  with pytest.raises(ParameterError) as e:
    decoding.check_beam(**kw)
  assert e.value.param == param and str(e.value).startswith(f"{param}=")


def test_a_model_without_stepwise_decoding_is_refused():
  model = RepeatVectorSeq2Seq(src_vocab=5, tgt_vocab=5, units=4, out_len=3)
  with pytest.raises(ValueError, match="step by step"):
    decoding.decode(model, {}, np.zeros((1, 3), np.int32),
                    strategy=decoding.BeamSearch(2), max_len=3, start_id=0)


@pytest.mark.parametrize("kind, score", [("luong", "general"),
                                         ("luong", "dot"), ("bahdanau", "")])
def test_attention_serves_k_query_rows_from_one_memory_row(kind, score):
  from seqjax import attention as attention_lib
  rng = np.random.default_rng(0)
  b, k, s, h = 3, 4, 5, 6
  arrays = {"key_kernel": rng.normal(size=(h, h)).astype(np.float32)}
  if kind == "bahdanau":
    arrays.update(query_kernel=rng.normal(size=(h, h)).astype(np.float32),
                  v=rng.normal(size=(h,)).astype(np.float32))
  elif score == "dot":
    arrays = {}
  values_BSM = rng.normal(size=(b, s, h)).astype(np.float32)
  mask_BS = np.arange(s)[None] < np.array([5, 2, 3])[:, None]
  memory = attention_lib.make_memory(arrays, values_BSM, mask_BS)
  query_XH = rng.normal(size=(b * k, h)).astype(np.float32)
  repeated = jax.tree.map(lambda x: np.repeat(x, k, 0), memory)
  for got, want in zip(attention_lib.attend(arrays, kind, query_XH, memory),
                       attention_lib.attend(arrays, kind, query_XH, repeated)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="not a multiple"):
    attention_lib.attend(arrays, kind, query_XH[:-1], memory)
