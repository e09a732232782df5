"""Attention against NumPy written from the papers; the attention model's
teacher-forced logits against its step-by-step decoder and a NumPy model;
the weights greedy decoding returns; dropout; label smoothing; bad
architectures; the decoder state under beam search's repeat and gather; the
score registry; and a tiny attention model that reverses length-30 sequences
that the plain model of the same size cannot."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import attention as attention_lib
from seqjax import decoding
from seqjax import metrics as metrics_lib
from seqjax import per_beam
from seqjax import train as train_lib
from seqjax.data import reverse
from seqjax.models import ModelSettings, Seq2Seq
from tests import seq2seq_reference as ref
from tests import tiers

B, S, H, M, T = 3, 6, 5, 7, 4
LENGTHS = np.array([6, 2, 4])  # a full row, a short one, one in between
MASK_BS = np.arange(S)[None] < LENGTHS[:, None]

# (kind, score, memory width): a dot score needs the memory as wide as H.
MECHANISMS = [("bahdanau", "general", M), ("luong", "dot", H),
              ("luong", "general", M), ("luong", "concat", M),
              ("luong", "scaled_dot", H), ("luong", "additive", M)]



def _no_dropout(model):
  return model.clone(settings=dataclasses.replace(model.settings,
                                                  dropout=0.0))

def _arrays(kind, score, memory_features, seed=0):
  module = attention_lib.Attention(kind, H, memory_features, score)
  variables = module.init(jax.random.key(seed), method=lambda m: m.arrays())
  return module.apply(variables, method=lambda m: m.arrays())


def _memory_and_queries(memory_features, seed=1):
  rng = np.random.default_rng(seed)
  memory_BSM = rng.normal(size=(B, S, memory_features)).astype(np.float32)
  # Padded rows huge: any weight leaking onto them would swamp the context.
  memory_BSM[~MASK_BS] = 50.0
  query_BH = rng.normal(size=(B, H)).astype(np.float32)
  query_BTH = rng.normal(size=(B, T, H)).astype(np.float32)
  return memory_BSM, query_BH, query_BTH


@pytest.mark.parametrize("kind,score,mf", MECHANISMS)
@pytest.mark.parametrize("steps", ["single", "all_steps"])
def test_scores_weights_and_context_match_the_papers(kind, score, mf, steps):
  arrays = _arrays(kind, score, mf)
  name = attention_lib.score_of(kind, score)
  memory_BSM, query_BH, query_BTH = _memory_and_queries(mf)
  query = query_BH if steps == "single" else query_BTH
  memory = attention_lib.make_memory(arrays, memory_BSM, MASK_BS, name)
  got_scores = attention_lib.scores(arrays, name, query, memory)
  want_scores = ref.scores_numpy(arrays, kind, score, query, memory_BSM)
  real = MASK_BS if steps == "single" else MASK_BS[:, None, :]
  real = np.broadcast_to(real, want_scores.shape)
  np.testing.assert_allclose(np.asarray(got_scores)[real], want_scores[real],
                             rtol=1e-5, atol=1e-5)
  context, weights = attention_lib.attend(arrays, name, query, memory)
  want_context, want_weights = ref.attend_numpy(arrays, kind, score, query,
                                                memory_BSM, MASK_BS)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5)
  weights = np.asarray(weights)
  assert np.all(weights[~real] == 0.0)  # exactly, not nearly
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind,score,mf", MECHANISMS)
def test_all_steps_queries_equal_one_query_at_a_time(kind, score, mf):
  arrays = _arrays(kind, score, mf)
  name = attention_lib.score_of(kind, score)
  memory_BSM, _, query_BTH = _memory_and_queries(mf)
  memory = attention_lib.make_memory(arrays, memory_BSM, MASK_BS, name)
  context_BTM, weights_BTS = attention_lib.attend(arrays, name, query_BTH,
                                                  memory)
  for t in range(T):
    c, w = attention_lib.attend(arrays, name, query_BTH[:, t], memory)
    np.testing.assert_allclose(context_BTM[:, t], c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weights_BTS[:, t], w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind,score,mf", MECHANISMS)
def test_what_is_on_padded_positions_changes_nothing(kind, score, mf):
  arrays = _arrays(kind, score, mf)
  name = attention_lib.score_of(kind, score)
  memory_BSM, query_BH, _ = _memory_and_queries(mf)
  other_BSM = memory_BSM.copy()
  other_BSM[~MASK_BS] = -7.0
  a = attention_lib.attend(arrays, name, query_BH,
                           attention_lib.make_memory(arrays, memory_BSM,
                                                     MASK_BS, name))
  b = attention_lib.attend(arrays, name, query_BH,
                           attention_lib.make_memory(arrays, other_BSM,
                                                     MASK_BS, name))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_masked_softmax_is_stable_and_an_empty_row_is_zeros():
  scores_BS = np.array([[1000.0, 999.0, -1000.0, 5.0],
                        [3.0, 2.0, 1.0, 0.0],
                        [1.0, 2.0, 3.0, 4.0]], np.float32)
  mask_BS = np.array([[True, True, False, False],
                      [False, True, True, True],
                      [False, False, False, False]])
  got = np.asarray(attention_lib.masked_softmax(scores_BS, mask_BS))
  e = np.exp(np.array([0.0, -1.0]))
  np.testing.assert_allclose(got[0], np.r_[e / e.sum(), 0, 0], rtol=1e-6)
  e = np.exp(np.array([2.0, 1.0, 0.0]))
  np.testing.assert_allclose(got[1], np.r_[0, e / e.sum()], rtol=1e-6)
  np.testing.assert_array_equal(got[2], np.zeros(4))


# ---------------------------------------------- the attention model's decoder

V = 11
DEC_T = 5
SRC_LENGTHS = np.array([S, 2, 4, 1])

# (attention, score, input_feeding)
ATTENTIONS = [("none", "general", True), ("bahdanau", "general", True),
              ("luong", "dot", True), ("luong", "dot", False),
              ("luong", "general", True), ("luong", "general", False)]
# The other scores in three of the settings each.
OTHER_SCORES = [("luong", "concat", True), ("luong", "concat", False),
                ("luong", "scaled_dot", True), ("luong", "scaled_dot", False)]


def _configs():
  """Each attention in six settings rather than the whole product: each
  cell with one and two layers, the same number each side or not (a
  bridge), with a bidirectional encoder and without."""
  variants = [("lstm", (1, 1), False), ("gru", (2, 2), True),
              ("lstm", (1, 2), True), ("gru", (2, 1), False),
              ("lstm", (2, 2), False), ("gru", (1, 1), True)]
  out = []
  settings = ([(a, variants) for a in ATTENTIONS]
              + [(a, variants[::2]) for a in OTHER_SCORES])
  for (attention, score, feed), chosen in settings:
    for cell, layers, bidirectional in chosen:
      if attention_lib.SCORES[score].same_width and attention == "luong":
        bidirectional = False  # a 2H-wide memory: no dot score
      config = (attention, score, feed, cell, layers, bidirectional)
      if config not in out:
        out.append(config)
  return out


CONFIGS = _configs()


def _id(config):
  attention, score, feed, cell, (enc, dec), bidirectional = config
  name = attention if attention != "luong" else f"luong_{score}"
  if attention == "luong" and not feed:
    name += "_nofeed"
  return f"{name}-{cell}-{enc}x{dec}{'-bi' if bidirectional else ''}"


def _model(config, **kw):
  attention, score, feed, cell, (enc, dec), bidirectional = config
  return Seq2Seq(src_vocab=V, tgt_vocab=V,
                 settings=ModelSettings(units=H, cell=cell, encoder_layers=enc,
                                        decoder_layers=dec,
                                        bidirectional=bidirectional,
                                        attention=attention,
                                        attention_score=score,
                                        input_feeding=feed, **kw))


def _data(seed=0, src_len=S, lengths=SRC_LENGTHS):
  rng = np.random.default_rng(seed)
  # Padding holds other tokens than 0, so only the mask can hide it.
  src_BS = rng.integers(1, V, size=(len(lengths), src_len)).astype(np.int32)
  mask_BS = np.arange(src_len)[None] < lengths[:, None]
  dec_in_BT = rng.integers(0, V, size=(len(lengths), DEC_T)).astype(np.int32)
  return src_BS, mask_BS, dec_in_BT


def _params(model, seed=0):
  src_BS, _, dec_in_BT = _data()
  return ref.random_params(model, src_BS[:1], dec_in_BT[:1], seed)


def _stepwise_logits(model, params, src_BS, mask_BS, dec_in_BT):
  state = model.apply(params, src_BS, mask_BS,
                      method=Seq2Seq.encode_for_decoding)
  logits = []
  for t in range(dec_in_BT.shape[1]):
    logits_BV, state = model.apply(params, dec_in_BT[:, t], state,
                                   method=Seq2Seq.decode_step)
    logits.append(logits_BV)
  return jnp.stack(logits, axis=1)


@functools.lru_cache(maxsize=None)
def _run(config):
  """Teacher-forced and step-by-step logits of one configuration (cached:
  several tests compare them against different things)."""
  model = _model(config)
  params = _params(model)
  src_BS, mask_BS, dec_in_BT = _data()
  # Eager: at these sizes compiling costs more than it saves.
  forced = model.apply(params, src_BS, dec_in_BT, mask_BS)
  stepwise = _stepwise_logits(model, params, src_BS, mask_BS, dec_in_BT)
  return model, params, np.asarray(forced), np.asarray(stepwise)


@pytest.mark.full
@pytest.mark.parametrize("config", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_teacher_forced_logits_equal_step_by_step_decoding(config):
  _, _, forced, stepwise = _run(config)
  np.testing.assert_allclose(forced, stepwise, rtol=1e-5, atol=1e-5)


# Each attention setting in one of its variants in the fast tier (the pick
# rotates, so every variant is there too), the others in the full tier.
@pytest.mark.parametrize("config", tiers.tiered(
    CONFIGS, tiers.rotating(CONFIGS, lambda c: c[:3]), _id))
def test_teacher_forced_logits_match_the_numpy_model(config):
  model, params, forced, _ = _run(config)
  src_BS, _, dec_in_BT = _data()
  want = ref.seq2seq_numpy(model, params, src_BS, dec_in_BT, SRC_LENGTHS)
  np.testing.assert_allclose(forced, want, rtol=1e-4, atol=1e-5)


# Input feeding and Bahdanau feed an extra input: LSTM's first layer then
# multiplies it and h by one stacked kernel in teacher forcing alone.
JOINT = [("luong", "general", True, "lstm", (1, 1), True),
         ("bahdanau", "general", True, "lstm", (1, 2), False)]


# The fast tier: Bahdanau's extra input (with a bridge); input feeding in
# the full tier.
@pytest.mark.parametrize("config", tiers.tiered(JOINT, {1}, _id))
def test_joint_kernel_gradients_equal_the_step_by_step_decoders(config):
  """Teacher forcing's gradient (its step multiplies [extra, h] by the
  stacked kernel) against that of step-by-step decoding (two matmuls a
  step) and, along one direction, central finite differences."""
  model = _model(config)
  params = _params(model)
  src_BS, mask_BS, dec_in_BT = _data()
  w_BTV = np.random.default_rng(5).normal(
      size=dec_in_BT.shape + (V,)).astype(np.float32)
  forced = lambda p: jnp.sum(w_BTV * model.apply(p, src_BS, dec_in_BT,
                                                 mask_BS))
  stepwise = lambda p: jnp.sum(w_BTV * _stepwise_logits(
      model, p, src_BS, mask_BS, dec_in_BT))
  got, want = jax.grad(forced)(params), jax.grad(stepwise)(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
  direction = jax.tree.map(
      lambda a: jnp.asarray(np.random.default_rng(a.size).normal(
          size=a.shape), a.dtype), params)
  eps = 1e-2
  shifted = lambda sign: jax.tree.map(lambda a, d: a + sign * eps * d,
                                      params, direction)
  numeric = (float(forced(shifted(1))) - float(forced(shifted(-1)))) / (
      2 * eps)
  analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(
      jax.tree.leaves(got), jax.tree.leaves(direction)))
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_only_an_lstm_with_an_extra_input_stacks_a_joint_kernel():
  for config, stacks in [(JOINT[0], True),
                         (("luong", "general", False, "lstm", (1, 1), True),
                          False),
                         (("luong", "general", True, "gru", (1, 1), True),
                          False)]:
    model = _model(config)
    parts = model.apply(_params(model), method=lambda m: m._parts())
    joint = parts.with_joint_kernel().joint_kernel
    assert (joint is not None) == stacks, config
    if stacks:  # the extra rows of the input kernel above the recurrent one
      first = parts.layers[0]
      np.testing.assert_array_equal(joint, np.concatenate([
          first.kernel[-parts.extra_in:], first.recurrent["recurrent_kernel"]]))


FREE_RUNNING = [c for c in CONFIGS if (c[3], c[4]) in (
    ("lstm", (1, 1)), ("gru", (2, 2)), ("gru", (2, 1)))]


@pytest.mark.full
@pytest.mark.parametrize("config", FREE_RUNNING,
                         ids=[_id(c) for c in FREE_RUNNING])
def test_free_running_argmax_tokens_equal_greedy_decoding(config):
  model, params, _, _ = _run(config)
  src_BS, mask_BS, _ = _data()
  logits_BTV = model.apply(params, src_BS, DEC_T, 0, mask_BS, "argmax",
                           method=Seq2Seq.free_running)
  greedy_BT = decoding.decode(model, params, src_BS, max_len=DEC_T,
                              start_id=0, src_mask_BS=mask_BS).tokens_BT
  np.testing.assert_array_equal(np.argmax(logits_BTV, -1), greedy_BT)
  # And its logits are the decoder's fed those tokens one by one.
  dec_in_BT = np.concatenate([np.zeros((len(src_BS), 1), np.int32),
                              np.asarray(greedy_BT)[:, :-1]], axis=1)
  np.testing.assert_allclose(
      logits_BTV, _stepwise_logits(model, params, src_BS, mask_BS, dec_in_BT),
      rtol=1e-5, atol=1e-5)


@pytest.mark.full
@pytest.mark.parametrize("config", [c for c in CONFIGS
                                    if (c[3], c[4]) == ("gru", (2, 2))],
                         ids=_id)
def test_source_padding_changes_no_logit(config):
  # The same sentences padded to 9 steps with other junk: the same logits.
  model, params, forced, _ = _run(config)
  src_BS, mask_BS, dec_in_BT = _data()
  rng = np.random.default_rng(5)
  wide_BS = rng.integers(1, V, size=(len(src_BS), 9)).astype(np.int32)
  wide_BS[:, :S] = np.where(mask_BS, src_BS, wide_BS[:, :S])
  wide_mask_BS = np.arange(9)[None] < SRC_LENGTHS[:, None]
  got = model.apply(params, wide_BS, dec_in_BT, wide_mask_BS)
  np.testing.assert_allclose(got, forced, rtol=1e-5, atol=1e-6)


# ------------------------------------------------ greedy decoding's weights

@pytest.mark.full
@pytest.mark.parametrize("attention,score,feed,bidirectional", [
    ("bahdanau", "general", True, True), ("luong", "general", True, False),
    ("luong", "dot", False, False)])
@pytest.mark.parametrize("early_stop", [True, False])
def test_greedy_attention_weights(attention, score, feed, bidirectional,
                                  early_stop):
  config = (attention, score, feed, "lstm", (1, 1), bidirectional)
  model, params, _, _ = _run(config)
  src_BS, mask_BS, _ = _data()
  max_len = 8
  free_BT = np.asarray(decoding.decode(
      model, params, src_BS, max_len=max_len, start_id=0,
      src_mask_BS=mask_BS).tokens_BT)

  def emitted(stop_id):  # steps emitted per row, the stop included
    return [int(np.argmax(row == stop_id)) + 1 if (row == stop_id).any()
            else max_len for row in free_BT]
  # The stop token that ends the rows at the most different steps.
  stop_id = max(range(V), key=lambda v: (len(set(emitted(v))), -v))
  emitted_B = emitted(stop_id)
  assert len(set(emitted_B)) >= 2 and min(emitted_B) < max_len
  tokens_BT, _, weights_BTS, _ = decoding.decode(
      model, params, src_BS, max_len=max_len, start_id=0, stop_id=stop_id,
      src_mask_BS=mask_BS, early_stop=early_stop, return_attention=True)
  tokens_BT, weights_BTS = np.asarray(tokens_BT), np.asarray(weights_BTS)
  assert weights_BTS.shape == (len(src_BS), max_len, S)
  for b, emitted in enumerate(emitted_B):
    w = weights_BTS[b]
    np.testing.assert_allclose(w[:emitted].sum(-1), 1.0, atol=1e-6)
    assert np.all(w[:emitted][:, ~mask_BS[b]] == 0.0)
    assert np.all(w[:emitted][:, mask_BS[b]] > 0.0)
    assert np.all(w[emitted:] == 0.0)
    assert np.all(tokens_BT[b, emitted:] == 0)
    np.testing.assert_array_equal(tokens_BT[b, :emitted],
                                  free_BT[b, :emitted])
  # Before the stop they are the decoder state's, step by step.
  state = model.apply(params, src_BS, mask_BS,
                      method=Seq2Seq.encode_for_decoding)
  for t in range(max_len):
    token_B = np.zeros(len(src_BS), np.int32) if t == 0 else free_BT[:, t - 1]
    _, state = model.apply(params, token_B, state, method=Seq2Seq.decode_step)
    for b in range(len(src_BS)):
      if t < emitted_B[b]:
        np.testing.assert_allclose(weights_BTS[b, t], state.weights_BS[b],
                                   atol=1e-6)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_first_greedy_weights_match_numpy(attention):
  # Bahdanau attends with the state before the step (here the encoder's
  # final one), Luong with the state after it.
  config = (attention, "general", False, "lstm", (1, 1), False)
  model, params, _, _ = _run(config)
  src_BS, mask_BS, _ = _data()
  p = params["params"]
  weights_BTS = decoding.decode(
      model, params, src_BS, max_len=1, start_id=0, src_mask_BS=mask_BS,
      return_attention=True).weights_BTS
  x = ref.inputs_numpy(p, src_BS, V, None)
  memory_BSM, finals = ref.encoder_numpy("lstm", p, x, SRC_LENGTHS, 1, False)
  query_BH = finals[0][0]
  if attention == "luong":
    start_B1V = ref.inputs_numpy(p, np.zeros((len(src_BS), 1), np.int32), V,
                                 None)
    out, _ = ref.layer_numpy("lstm", p["decoder"], start_B1V, finals[0])
    query_BH = out[:, 0]
  _, want = ref.attend_numpy(p["attention"], attention, "general", query_BH,
                             memory_BSM, mask_BS)
  np.testing.assert_allclose(weights_BTS[:, 0], want, atol=1e-6)


@pytest.mark.full
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_a_bfloat16_attention_model_decodes(attention):
  # --dtype=bfloat16 is a shared flag: greedy decoding and free-running
  # training of an attention model must run in it, and agree with teacher
  # forcing on the same model.
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, attention=attention),
                  dtype=jnp.bfloat16)
  params = _params(model)
  src_BS, mask_BS, _ = _data()
  weights_BTS = decoding.decode(
      model, params, src_BS, max_len=DEC_T, start_id=0, stop_id=3,
      src_mask_BS=mask_BS, return_attention=True).weights_BTS
  sums_BT = np.asarray(weights_BTS).sum(-1)
  assert np.all((np.abs(sums_BT - 1) < 1e-2) | (sums_BT == 0))
  logits_BTV = model.apply(params, src_BS, DEC_T, 0, mask_BS, "argmax",
                           method=Seq2Seq.free_running)
  assert logits_BTV.shape == (len(src_BS), DEC_T, V)
  greedy_BT = decoding.decode(model, params, src_BS, max_len=DEC_T,
                              start_id=0, src_mask_BS=mask_BS).tokens_BT
  np.testing.assert_array_equal(np.argmax(logits_BTV, -1), greedy_BT)


# ------------------------------------------------------------------ dropout

DROPOUT_CONFIGS = [("none", "general", True, "lstm", (2, 2), True),
                   ("bahdanau", "general", True, "gru", (1, 2), False),
                   ("luong", "general", True, "lstm", (2, 1), True),
                   ("luong", "dot", False, "lstm", (2, 2), False)]


@pytest.mark.full
@pytest.mark.parametrize("config", DROPOUT_CONFIGS, ids=_id)
def test_dropout_is_deterministic_under_a_seed_and_off_without_an_rng(config):
  # An embedding, so that the source and target inputs are dropped too.
  model = _model(config, dropout=0.3, embedding_dim=6)
  params = _params(model)
  src_BS, mask_BS, dec_in_BT = _data()

  def logits(seed=None):
    rngs = None if seed is None else {"dropout": jax.random.key(seed)}
    return np.asarray(model.apply(params, src_BS, dec_in_BT, mask_BS,
                                  rngs=rngs))
  a, again, other, evaluation = logits(1), logits(1), logits(2), logits()
  np.testing.assert_array_equal(a, again)
  assert np.abs(a - other).max() > 1e-3
  assert np.abs(a - evaluation).max() > 1e-3
  plain = _no_dropout(model).apply(params, src_BS, dec_in_BT, mask_BS)
  np.testing.assert_allclose(evaluation, plain, rtol=1e-6, atol=1e-6)
  # A dropout rng changes nothing in a model without dropout.
  np.testing.assert_allclose(
      _no_dropout(model).apply(params, src_BS, dec_in_BT, mask_BS,
                                     rngs={"dropout": jax.random.key(1)}),
      plain, rtol=1e-6, atol=1e-6)


def test_dropout_drops_at_its_rate_and_scales_what_it_keeps():
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, dropout=0.3))
  ones = jnp.ones((400, 100))
  got = np.asarray(model.apply({}, ones, method=lambda m, x: m._drop(x),
                               rngs={"dropout": jax.random.key(0)}))
  assert abs((got == 0).mean() - 0.3) < 0.01
  np.testing.assert_allclose(got[got != 0], 1 / 0.7, rtol=1e-6)
  np.testing.assert_array_equal(
      model.apply({}, ones, method=lambda m, x: m._drop(x)), ones)


@pytest.mark.full
def test_dropout_in_step_by_step_decoding_and_free_running():
  config = ("luong", "general", True, "lstm", (2, 2), False)
  model = _model(config, dropout=0.3, embedding_dim=6)
  params = _params(model)
  src_BS, mask_BS, _ = _data()

  def run(seed=None):
    rngs = None if seed is None else {"dropout": jax.random.key(seed)}
    return np.asarray(model.apply(params, src_BS, DEC_T, 0, mask_BS,
                                  "softmax", method=Seq2Seq.free_running,
                                  rngs=rngs))
  np.testing.assert_array_equal(run(3), run(3))
  assert np.abs(run(3) - run(4)).max() > 1e-3
  plain = _no_dropout(model).apply(
      params, src_BS, DEC_T, 0, mask_BS, "softmax",
      method=Seq2Seq.free_running)
  np.testing.assert_allclose(run(), plain, rtol=1e-6, atol=1e-6)


def _batch():
  src_BS, mask_BS, dec_in_BT = _data()
  rng = np.random.default_rng(9)
  target_BT = rng.integers(1, V, size=dec_in_BT.shape).astype(np.int32)
  target_mask_BT = np.arange(DEC_T)[None] < np.array([5, 3, 4, 2])[:, None]
  return {"src": src_BS, "src_mask": mask_BS, "dec_in": dec_in_BT,
          "target": target_BT, "target_mask": target_mask_BT}


@pytest.mark.full
def test_train_step_with_dropout_same_seed_and_step_same_update():
  config = ("luong", "general", False, "lstm", (1, 1), False)
  model = _model(config, dropout=0.3, embedding_dim=6)
  params = _params(model)
  batch = _batch()
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))

  def differ(a, b):
    return max(float(jnp.abs(x - y).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  def train_step(seed):
    return jax.jit(train_lib.make_train_step(
        train_lib.make_seq2seq_loss(model, dropout_seed=seed)))
  step = train_step(7)
  # The same state and batch twice: the same loss and update, so the same
  # gradients (Adam's update is a function of them and the state).
  s1, m1 = step(state, batch)
  s2, m2 = step(state, batch)
  assert float(m1["loss"]) == float(m2["loss"])
  assert differ(s1.params, s2.params) == 0.0
  # Another step number draws other masks (the optimizer state is the same,
  # so only the dropout differs).
  s3, m3 = step(state.replace(step=state.step + 1), batch)
  assert float(m3["loss"]) != float(m1["loss"])
  assert differ(s1.params, s3.params) > 1e-6
  # Another seed too.
  s4, m4 = train_step(8)(state, batch)
  assert float(m4["loss"]) != float(m1["loss"])
  assert differ(s1.params, s4.params) > 1e-6
  # Evaluation has no dropout: its loss is the dropout-free model's.
  loss_fn = train_lib.make_seq2seq_loss(model, dropout_seed=7)
  evaluation = loss_fn(params, batch)[0]
  plain = train_lib.make_seq2seq_loss(_no_dropout(model))(params,
                                                                 batch)[0]
  np.testing.assert_allclose(evaluation, plain, rtol=1e-6)
  assert abs(float(m1["loss"]) - float(plain)) > 1e-4


# ------------------------------------------------------------ label smoothing

@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("masked", [False, True])
def test_label_smoothing_is_cross_entropy_against_the_smoothed_targets(
    epsilon, masked):
  rng = np.random.default_rng(3)
  logits_BTV = (3 * rng.normal(size=(4, 6, 9))).astype(np.float32)
  target_BT = rng.integers(0, 9, size=(4, 6))
  mask_BT = (np.arange(6)[None] < np.array([6, 1, 3, 5])[:, None]
             if masked else np.ones((4, 6), bool))
  got = metrics_lib.masked_cross_entropy(logits_BTV, target_BT,
                                         mask_BT if masked else None,
                                         label_smoothing=epsilon)
  x = logits_BTV.astype(np.float64)
  log_p = x - x.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  q = (1 - epsilon) * np.eye(9)[target_BT] + epsilon / 9
  losses_BT = -(q * log_p).sum(-1)
  want = losses_BT[mask_BT].mean()
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ------------------------------------------------------ bad architectures

@pytest.mark.parametrize("kw,match", [
    ({"encoder_layers": 0}, "layers must be at least 1"),
    ({"decoder_layers": 0}, "layers must be at least 1"),
    ({"decoder_layers": -1}, "layers must be at least 1"),
    ({"dropout": -0.1}, "dropout"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": float("nan")}, "dropout"),
    ({"attention": "additive"}, "unknown attention"),
    ({"attention": "luong", "attention_score": "cosine"}, "Luong score"),
    ({"attention": "luong", "attention_score": "scaled_dot",
      "bidirectional": True}, "scaled_dot score"),
    ({"attention": "luong", "attention_score": "dot", "bidirectional": True},
     "dot score"),
])
def test_bad_architectures_raise_value_error(kw, match):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, **kw))
  src_BS, _, dec_in_BT = _data()
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), src_BS[:1], dec_in_BT[:1])


def test_a_dot_score_with_another_memory_width_raises_value_error():
  with pytest.raises(ValueError, match="dot score"):
    _arrays("luong", "dot", H + 1)
  with pytest.raises(ValueError, match="unknown attention"):
    _arrays("none", "general", H)
  attention_lib.check("luong", "dot", H, H)  # equal widths: fine


# ------------------------------------------- what attention buys: reversing

def _reverse_accuracy(attention, seed):
  """Greedy token accuracy on held-out reversals of 30 tokens after the same
  short training (7 epochs of 128 steps) of the same-size model with or
  without attention."""
  length, vocab, units, n, epochs, batch = 30, 8, 32, 4096, 7, 32
  data = reverse.generate(np.random.default_rng(seed), n, length, length,
                          vocab)
  test = reverse.generate(np.random.default_rng(seed + 100), 256, length,
                          length, vocab)
  model = Seq2Seq(src_vocab=vocab, tgt_vocab=vocab,
                  settings=ModelSettings(units=units, attention=attention,
                                         input_feeding=False))
  params = model.init(jax.random.key(seed), data["src"][:1],
                      data["dec_in"][:1])
  # A decaying rate: at a constant 0.01 the attention model's accuracy
  # swings between epochs.
  steps = epochs * n // batch
  tx = optax.adam(optax.linear_schedule(0.01, 0.0005, steps), eps=1e-7)
  state = train_lib.create_train_state(model, params, tx)
  cfg = train_lib.FitConfig(batch_size=batch, epochs=epochs,
                            steps_per_call=64, log_every_steps=0, seed=seed,
                            progress="none")
  state, _ = train_lib.fit(state, data, train_lib.make_seq2seq_loss(model),
                           cfg)
  tokens_BT = decoding.decode(model, state.params, test["src"],
                              max_len=length, start_id=0).tokens_BT
  return float((np.asarray(tokens_BT) == test["target"]).mean())


@pytest.mark.full
def test_attention_learns_to_reverse_30_tokens_the_plain_model_cannot():
  attending, plain = _reverse_accuracy("luong", 0), _reverse_accuracy(
      "none", 0)
  assert attending > 0.9, (attending, plain)
  assert plain < 0.5, (attending, plain)


# ------------------------------------------------ the decoder state in beams

BEAM_CONFIGS = [c for c in CONFIGS
                if c[0] != "none" and (c[3], c[4]) == ("gru", (2, 2))]


# Bahdanau's and Luong's states in the fast tier, the other scores in full.
@pytest.mark.parametrize("config", [
    pytest.param(c, id=_id(c), marks=() if i < 2 else pytest.mark.full)
    for i, c in enumerate(BEAM_CONFIGS)])
def test_beams_map_over_the_state_and_leave_the_memory_shared(config):
  """Beam search's repeat and gather through ``map_per_beam`` give the
  steps of a state whose every leaf, memory included, was copied per beam."""
  model, params, _, _ = _run(config)
  src_BS, mask_BS, _ = _data()
  k, rows = 3, len(src_BS)
  state = model.apply(params, src_BS, mask_BS, method=Seq2Seq.encode)
  beams = per_beam.map_per_beam(lambda x: jnp.repeat(x, k, 0), state)
  copied = jax.tree.map(lambda x: jnp.repeat(x, k, 0), state)
  rng = np.random.default_rng(3)
  for _ in range(3):
    token_X = rng.integers(0, V, size=rows * k).astype(np.int32)
    got, beams = model.apply(params, token_X, beams,
                             method=Seq2Seq.decode_step)
    want, copied = model.apply(params, token_X, copied,
                               method=Seq2Seq.decode_step)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Each beam continues one of its own sentence's beams.
    take_X = np.repeat(np.arange(rows), k) * k + rng.integers(0, k, rows * k)
    beams = per_beam.map_per_beam(lambda x: jnp.take(x, take_X, 0), beams)
    copied = jax.tree.map(lambda x: jnp.take(x, take_X, 0), copied)
  assert beams.memory.value.values_BSM.shape[0] == rows
  assert beams.weights_BS.shape[0] == rows * k


# ------------------------------------------------------ the score registry

def test_a_new_score_is_one_registry_entry(monkeypatch):
  """A dot score over a learned temperature, registered and nothing else:
  its parameter is the model's, and at temperature 1 it is the dot model."""
  entry = attention_lib.Score(
      init=lambda param, h, m: {
          "temperature": param("temperature", nn.initializers.ones, ())},
      score=lambda p, q, k: attention_lib.SCORES["dot"].score(p, q, k)
      / p["temperature"],
      same_width=True)
  monkeypatch.setitem(attention_lib.SCORES, "tempered", entry)
  config = ("luong", "tempered", True, "lstm", (1, 1), False)
  model = _model(config)
  params = model.init(jax.random.key(0), *_data()[::2])
  assert params["params"]["attention"]["temperature"] == 1.0
  dot_model, dot_params, forced, _ = _run(
      ("luong", "dot", True, "lstm", (1, 1), False))
  params = jax.tree.map(lambda x: x, dot_params)
  params["params"]["attention"] = {"temperature": jnp.ones(())}
  src_BS, mask_BS, dec_in_BT = _data()
  np.testing.assert_allclose(model.apply(params, src_BS, dec_in_BT, mask_BS),
                             forced, rtol=1e-6, atol=1e-6)
  params["params"]["attention"] = {"temperature": jnp.full((), 0.25)}
  assert not np.allclose(model.apply(params, src_BS, dec_in_BT, mask_BS),
                         forced, atol=1e-3)


def test_translate_offers_every_registered_score():
  from experiments import translate
  field = translate.TranslateConfig.__dataclass_fields__["attention_score"]
  assert set(field.metadata["choices"]) == set(attention_lib.SCORES)
  assert set(attention_lib.SCORES) >= {"dot", "general", "concat",
                                       "scaled_dot", "additive"}
