"""Sampling (``seqjax.decoding.Sampling``): draw frequencies against a NumPy
tempered, truncated softmax; seeds; top-k 1 is greedy; a sampling decoder
stays within the top-k / top-p support of the model's own steps."""

import jax
import numpy as np
import pytest

from seqjax import decoding
from seqjax.errors import ParameterError
from seqjax.models import ModelSettings, Seq2Seq

START, STOP, PAD = 1, 2, 0
LOGITS = np.array([[2.0, 1.2, 0.3, -0.5, 0.9, -1.5],
                   [0.1, -0.4, 1.7, 1.1, -2.0, 0.6]], np.float32)


def _reference_probs(logits, temperature, top_k, top_p):
  """Temper, keep the top_k most likely, then the smallest most likely set
  of mass >= top_p, renormalise (float64, one token at a time)."""
  z = np.asarray(logits, np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-p, kind="stable")
  keep = np.zeros(len(p), bool)
  mass = 0.0
  for rank, i in enumerate(order):
    if (top_k and rank >= top_k) or mass >= top_p * p[order[:top_k or None]
                                                       ].sum():
      break
    keep[i] = True
    mass += p[i]
  p = np.where(keep, p, 0.0)
  return p / p.sum()


SETTINGS = [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 3, 1.0), (1.0, 0, 0.7),
            (0.8, 4, 0.6), (3.0, 2, 0.95)]


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
def test_draw_frequencies_match_the_tempered_truncated_softmax(
    temperature, top_k, top_p):
  n = 40_000
  strategy = decoding.Sampling(temperature, top_k, top_p)
  logits_BV = np.repeat(LOGITS, n, axis=0)
  tokens_B = np.asarray(jax.jit(strategy.select)(logits_BV,
                                                 jax.random.key(0)))
  for row, logits in enumerate(LOGITS):
    want = _reference_probs(logits, temperature, top_k, top_p)
    counts = np.bincount(tokens_B[row * n:(row + 1) * n], minlength=6)
    assert np.all(counts[want == 0] == 0), (counts, want)
    got = counts / n
    tolerance = 5 * np.sqrt(want * (1 - want) / n) + 1e-3
    assert np.all(np.abs(got - want) <= tolerance), (got, want)


def test_reference_truncates_as_documented():
  # The reference itself on a case worked by hand: probabilities
  # .5, .3, .2 -> top_p .6 keeps the first two, renormalised.
  logits = np.log([0.5, 0.3, 0.2])
  np.testing.assert_allclose(_reference_probs(logits, 1.0, 0, 0.6),
                             [0.625, 0.375, 0.0])
  np.testing.assert_allclose(_reference_probs(logits, 1.0, 1, 1.0),
                             [1.0, 0.0, 0.0])


def test_same_seed_same_draws_other_seed_other_draws():
  strategy = decoding.Sampling(1.5, 5, 0.95)
  logits_BV = np.repeat(LOGITS, 100, axis=0)
  select = jax.jit(strategy.select)
  first = np.asarray(select(logits_BV, jax.random.key(3)))
  again = np.asarray(select(logits_BV, jax.random.key(3)))
  other = np.asarray(select(logits_BV, jax.random.key(4)))
  np.testing.assert_array_equal(first, again)
  assert (first != other).mean() > 0.2


def test_top_k_one_is_argmax_exactly_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 51)).astype(np.float32)
  logits[:8] = np.round(logits[:8])  # ties: the first maximum wins
  logits[8, :] = 3.0
  for seed in range(3):
    got = decoding.Sampling(2.5, top_k=1).select(logits,
                                                 jax.random.key(seed))
    np.testing.assert_array_equal(np.asarray(got), logits.argmax(-1))


def _model(vocab=8, seed=0, attention="luong"):
  model = Seq2Seq(src_vocab=7, tgt_vocab=vocab,
                  settings=ModelSettings(units=6, attention=attention))
  rng = np.random.default_rng(seed)
  src_BS = rng.integers(1, 7, size=(48, 5)).astype(np.int32)
  mask_BS = np.arange(5)[None] < rng.integers(1, 6, size=48)[:, None]
  params = model.init(jax.random.key(seed), src_BS[:1], src_BS[:1, :2])
  return model, params, src_BS, mask_BS


def test_a_top_k_one_sampling_decoder_is_the_greedy_decoder():
  model, params, src_BS, mask_BS = _model()
  kw = dict(max_len=7, start_id=START, stop_id=STOP, pad_id=PAD)
  greedy = decoding.make_decoder(model, **kw)(params, src_BS, mask_BS)
  sampled = decoding.make_decoder(model, decoding.Sampling(3.0, top_k=1),
                                  **kw)(params, src_BS, mask_BS,
                                        jax.random.key(9))
  np.testing.assert_array_equal(np.asarray(sampled), np.asarray(greedy))


@pytest.mark.parametrize("temperature, top_k, top_p",
                         [(2.0, 3, 1.0), (2.0, 0, 0.5), (1.5, 4, 0.7)])
def test_a_sampling_decoder_stays_within_the_support(temperature, top_k,
                                                     top_p):
  model, params, src_BS, mask_BS = _model(seed=1)
  max_len = 6
  decode = decoding.make_decoder(
      model, decoding.Sampling(temperature, top_k, top_p), max_len=max_len,
      start_id=START, stop_id=STOP, pad_id=PAD)
  tokens_BT = np.asarray(decode(params, src_BS, mask_BS, jax.random.key(2)))
  # Each token against the model's distribution after the tokens before
  # it (the teacher-forced model, independent of the decoding loop).
  dec_in_BT = np.concatenate([np.full((len(src_BS), 1), START, np.int32),
                              tokens_BT[:, :-1]], axis=1)
  logits_BTV = np.asarray(model.apply(params, src_BS, dec_in_BT, mask_BS))
  outside_greedy = 0
  for b, row in enumerate(tokens_BT):
    end = list(row).index(STOP) + 1 if STOP in row else max_len
    assert np.all(row[end:] == PAD)
    for t in range(end):
      allowed = _reference_probs(logits_BTV[b, t], temperature, top_k,
                                 top_p) > 0
      assert allowed[row[t]], (b, t, row[t], allowed)
      outside_greedy += row[t] != logits_BTV[b, t].argmax()
  assert outside_greedy > 0  # it does sample, not only take the argmax


def test_log_probabilities_of_the_draws_are_the_models():
  model, params, src_BS, mask_BS = _model(seed=2)
  decode = decoding.make_decoder(
      model, decoding.Sampling(1.0), max_len=5, start_id=START,
      stop_id=STOP, pad_id=PAD, full=True, score=True)
  drawn = decode(params, src_BS, mask_BS, jax.random.key(0))
  tokens_BT = np.asarray(drawn.tokens_BT)
  dec_in_BT = np.concatenate([np.full((len(src_BS), 1), START, np.int32),
                              tokens_BT[:, :-1]], axis=1)
  logits = np.asarray(model.apply(params, src_BS, dec_in_BT, mask_BS),
                      np.float64)
  logp_BTV = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for b, row in enumerate(tokens_BT):
    end = list(row).index(STOP) + 1 if STOP in row else len(row)
    want = sum(logp_BTV[b, t, row[t]] for t in range(end))
    np.testing.assert_allclose(drawn.log_probs_B[b], want, rtol=1e-4)


@pytest.mark.parametrize("kw, param", [
    (dict(temperature=0.0), "sampling_temperature"),
    (dict(temperature=-1.0), "sampling_temperature"),
    (dict(temperature=float("nan")), "sampling_temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_settings_name_the_parameter(kw, param):
  with pytest.raises(ParameterError) as e:
    decoding.Sampling(**kw)
  assert e.value.param == param


def test_sampling_needs_a_key():
  model, params, src_BS, mask_BS = _model()
  with pytest.raises(ValueError, match="random key"):
    decoding.decode(model, params, src_BS, mask_BS,
                    strategy=decoding.Sampling(), max_len=3, start_id=START)
