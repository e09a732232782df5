"""In-flight batching (``seqjax.decoding.inflight``) against decoding each
sentence alone, and its step count against a simulation of the slots."""

import heapq

import jax
import numpy as np
import pytest

from seqjax import decoding
from seqjax import evaluate
from seqjax.decoding import decoder as decoder_lib
from seqjax.decoding import inflight
from seqjax.models import ModelSettings, Seq2Seq
from seqjax.training import programs
from seqjax.training import steps as steps_lib
from tests import seq2seq_reference as ref
from tests import tiers

START, STOP, PAD = 1, 2, 0
MAX_LEN = 7
ARCHITECTURES = {
    "plain_lstm": dict(),
    "luong_feeding_bidirectional": dict(attention="luong",
                                        bidirectional=True,
                                        embedding_dim=5),
}
# The stop token's readout bias: these models' outputs then end at varied
# steps, some at max_len.
STOP_BIAS = {"plain_lstm": -0.5, "luong_feeding_bidirectional": 1.5}


def _setup(arch, n=11, width=6, seed=0):
  """A tiny random model whose outputs end at varied steps, on ``n``
  sentences of varied lengths."""
  model = Seq2Seq(src_vocab=9, tgt_vocab=7,
                  settings=ModelSettings(units=6, **ARCHITECTURES[arch]))
  rng = np.random.default_rng(seed)
  # Padding holds real tokens: only the mask can hide it.
  src_NS = rng.integers(3, 9, size=(n, width)).astype(np.int32)
  mask_NS = np.arange(width)[None] < rng.integers(1, width + 1, n)[:, None]
  params = ref.random_params(model, src_NS[:1], src_NS[:1, :2], seed=seed)
  readout = params["params"]["readout"]
  readout["bias"] = readout["bias"].at[STOP].add(STOP_BIAS[arch])
  return model, params, src_NS, mask_NS


def _alone(model, params, src_NS, mask_NS, stop_id=STOP):
  """Each sentence decoded in a batch of one -> tokens (N, T), log P (N,)."""
  fn = decoding.make_decoder(model, max_len=MAX_LEN, start_id=START,
                             stop_id=stop_id, pad_id=PAD, full=True,
                             score=True)
  outs = [jax.device_get(fn(params, src_NS[i:i + 1], mask_NS[i:i + 1]))
          for i in range(len(src_NS))]
  return (np.concatenate([o.tokens_BT for o in outs]),
          np.concatenate([o.log_probs_B for o in outs]))


def _lengths(tokens_NT, stop_id=STOP):
  """Steps each sentence was decoded: up to its stop token, else all."""
  if stop_id is None:
    return np.full(len(tokens_NT), tokens_NT.shape[1])
  ends_NT = tokens_NT == stop_id
  return np.where(ends_NT.any(1), ends_NT.argmax(1) + 1, tokens_NT.shape[1])


def _simulated_steps(lengths_N, slots: int) -> int:
  """Steps until the last sentence ends when each sentence, in queue order,
  takes the slot that frees first and holds it for its length."""
  free = [0] * min(slots, len(lengths_N))
  ends = []
  for length in lengths_N:
    start = heapq.heappop(free)
    ends.append(start + int(length))
    heapq.heappush(free, ends[-1])
  return max(ends, default=0)


def _capped_steps(lengths_N, slots: int, refill: int) -> int:
  """Steps until the last sentence ends when, after every step, at most
  ``refill`` free slots (in slot order) take the queue's next sentences."""
  return _stepped(lengths_N, slots, refill)[0]


def _stepped(lengths_N, slots: int, refill: int, shrink_to: int = 0):
  """-> (steps, rows stepped) of ``_capped_steps``'s slots where, once the
  queue is empty and at most ``shrink_to`` sentences are live, each step
  steps ``shrink_to`` rows."""
  left = [0] * slots  # steps each slot's sentence has left; 0: free
  queue, steps, rows, size = list(lengths_N), 0, 0, slots
  for i in range(min(slots, len(queue))):
    left[i] = queue.pop(0)
  while any(left) or queue:
    if not queue and sum(map(bool, left)) <= shrink_to:
      size = shrink_to
    steps, rows = steps + 1, rows + size
    left = [max(x - 1, 0) for x in left]
    taken = 0
    for i in range(slots):
      if not left[i] and queue and taken < refill:
        left[i], taken = queue.pop(0), taken + 1
  return steps, rows


def _queue(model, params, src_NS, mask_NS, slots, count=None,
           stop_id=STOP):
  fn = decoding.make_decoder(model, max_len=MAX_LEN, start_id=START,
                             stop_id=stop_id, pad_id=PAD, full=True,
                             score=True, in_flight=True)
  return jax.device_get(fn(params, src_NS, mask_NS, slots=slots,
                           count=count))


QUEUE_CASES = [(slots, arch) for slots in (1, 3, 4) for arch in ARCHITECTURES]


# Each slot count in the fast tier with one of the models, in turn.
@pytest.mark.parametrize("slots,arch", tiers.tiered(
    QUEUE_CASES, tiers.rotating(QUEUE_CASES, lambda c: c[0]),
    lambda c: f"{c[0]}-{c[1]}", unpack=True))
def test_queue_equals_each_sentence_decoded_alone(arch, slots):
  model, params, src_NS, mask_NS = _setup(arch)
  tokens_NT, logp_N = _alone(model, params, src_NS, mask_NS)
  lengths_N = _lengths(tokens_NT)
  # Slots must refill at different steps, and max_len end some sentences.
  assert len(set(lengths_N.tolist())) >= 3, lengths_N
  assert (lengths_N == MAX_LEN).any() and (lengths_N < MAX_LEN).any()
  out = _queue(model, params, src_NS, mask_NS, slots)
  np.testing.assert_array_equal(out.tokens_NT, tokens_NT)
  # XLA rounds a row's matmuls by the batch's shape and its fusions (the
  # fixed-batch decoder differs from batch one by as much): sums a few
  # float32 roundings apart; one step's term more or less is far larger.
  np.testing.assert_allclose(out.log_probs_N, logp_N, rtol=1e-6, atol=1e-6)
  steps = _simulated_steps(lengths_N, slots)
  assert int(out.steps) == steps
  assert int(out.rows_stepped) == steps * slots
  # Slots idle only at the queue's end: rows stepped exceed the decoded
  # tokens by less than a slot's longest sentence per slot.
  assert lengths_N.sum() <= steps * slots < lengths_N.sum() + (
      slots * MAX_LEN)


@pytest.mark.parametrize("slots, refill", [(2, 1), (6, 1)])
def test_capped_refill_equals_each_sentence_decoded_alone(slots, refill):
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional",
                                          n=13)
  tokens_NT, logp_N = _alone(model, params, src_NS, mask_NS)
  lengths_N = _lengths(tokens_NT)
  out = jax.device_get(jax.jit(
      lambda p, x, m: decoding.decode_queue(
          model, p, x, m, slots=slots, refill=refill, max_len=MAX_LEN,
          start_id=START, stop_id=STOP, pad_id=PAD, score=True))(
              params, src_NS, mask_NS))
  np.testing.assert_array_equal(out.tokens_NT, tokens_NT)
  np.testing.assert_allclose(out.log_probs_N, logp_N, rtol=1e-6, atol=1e-6)
  steps = _capped_steps(lengths_N.tolist(), slots, refill)
  # The cap must have made some slot wait.
  assert steps > _simulated_steps(lengths_N, slots)
  assert int(out.steps) == steps


def test_the_capped_simulation_without_a_cap_is_the_queue_simulation():
  rng = np.random.default_rng(0)
  for _ in range(20):
    lengths = rng.integers(1, 9, size=rng.integers(1, 15)).tolist()
    slots = int(rng.integers(1, 6))
    assert _capped_steps(lengths, slots, slots) == _simulated_steps(
        lengths, slots)


def test_queue_decodes_only_the_first_count_sentences():
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional")
  tokens_NT, logp_N = _alone(model, params, src_NS[:8], mask_NS[:8])
  out = _queue(model, params, src_NS, mask_NS, slots=3, count=np.int32(8))
  np.testing.assert_array_equal(out.tokens_NT[:8], tokens_NT)
  np.testing.assert_allclose(out.log_probs_N[:8], logp_N, rtol=1e-6,
                             atol=1e-6)
  assert (out.tokens_NT[8:] == PAD).all() and (out.log_probs_N[8:] == 0).all()
  assert int(out.steps) == _simulated_steps(_lengths(tokens_NT), 3)


def test_more_slots_than_sentences_and_no_stop_token():
  model, params, src_NS, mask_NS = _setup("plain_lstm", n=5)
  tokens_NT, logp_N = _alone(model, params, src_NS, mask_NS, stop_id=None)
  out = _queue(model, params, src_NS, mask_NS, slots=8, stop_id=None)
  np.testing.assert_array_equal(out.tokens_NT, tokens_NT)
  np.testing.assert_allclose(out.log_probs_N, logp_N, rtol=1e-6, atol=1e-6)
  assert int(out.steps) == MAX_LEN and int(out.rows_stepped) == 8 * MAX_LEN


def test_decode_in_batches_gives_a_queue_decoder_the_whole_array():
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional")
  kw = dict(max_len=MAX_LEN, start_id=START, stop_id=STOP, pad_id=PAD)
  fixed = decoding.make_decoder(model, **kw)
  queue = decoding.make_decoder(model, in_flight=True, **kw)
  expected = decoding.decode_in_batches(fixed, params, src_NS, 4, mask_NS)
  got = decoding.decode_in_batches(queue, params, src_NS, 4, mask_NS)
  np.testing.assert_array_equal(got, expected)
  # 11 sentences padded to a queue of 12: one program for 9 to 12.
  assert decoding.queue_shape(11, 4) == 12 and decoding.queue_shape(8, 4) == 8
  again = decoding.decode_in_batches(queue, params, src_NS[:9], 4,
                                     mask_NS[:9])
  np.testing.assert_array_equal(again, expected[:9])
  assert queue.with_slots(4)._cache_size() == 1


def test_a_large_set_is_decoded_as_several_queues(monkeypatch):
  model, params, src_NS, mask_NS = _setup("plain_lstm")
  kw = dict(max_len=MAX_LEN, start_id=START, stop_id=STOP, pad_id=PAD)
  fixed = decoding.make_decoder(model, **kw)
  queue = decoding.make_decoder(model, in_flight=True, **kw)
  expected = decoding.decode_in_batches(fixed, params, src_NS, 3, mask_NS)
  # Queues of 9 and 2 sentences (padded to 3 rows): two programs.
  monkeypatch.setattr(decoder_lib, "MAX_QUEUE", 9)
  got = decoding.decode_in_batches(queue, params, src_NS, 3, mask_NS)
  np.testing.assert_array_equal(got, expected)
  assert queue.with_slots(3)._cache_size() == 2


def test_held_out_loss_compiles_an_in_flight_decoder_ahead():
  """The epoch end's queue (11 sentences, 4 slots: 12 rows) is compiled in
  the background; decoding the set then compiles nothing."""
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional")
  decoder = decoding.make_decoder(model, max_len=MAX_LEN, start_id=START,
                                  stop_id=STOP, pad_id=PAD, in_flight=True)
  held = evaluate.HeldOut("dev", ["s"] * 11, [["r"]] * 11,
                          {"src": src_NS, "src_mask": mask_NS}, {})
  hook = evaluate.HeldOutLoss(lambda p, b: {}, {"target_mask": mask_NS}, 4,
                              1, decoder=decoder, held_out=held,
                              tgt_vocab=object())
  before = steps_lib.compiles_of("in_flight_decode")
  hook.compile_ahead(params)
  programs.wait_for_background()
  assert steps_lib.compiles_of("in_flight_decode") == before + 1
  decoding.decode_in_batches(decoder, params, src_NS, 4, mask_NS)
  assert steps_lib.compiles_of("in_flight_decode") == before + 1


@pytest.mark.parametrize("strategy, options, problem", [
    (decoding.Sampling(), {}, "greedily"),
    (decoding.BeamSearch(2), {"feedback": "softmax"}, "fed its tokens"),
    (decoding.Greedy(), {"feedback": "softmax"}, "fed its tokens"),
    (decoding.Greedy(), {"return_attention": True}, "attention weights")])
def test_in_flight_refuses_what_it_cannot_decode(strategy, options, problem):
  model = Seq2Seq(src_vocab=9, tgt_vocab=7,
                  settings=ModelSettings(units=6, attention="luong"))
  with pytest.raises(ValueError, match=problem):
    decoding.make_decoder(model, strategy, max_len=MAX_LEN, start_id=START,
                          stop_id=STOP, in_flight=True, **options)


def test_a_beam_queue_decoder_gives_the_fixed_batch_beams():
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional")
  kw = dict(max_len=MAX_LEN, start_id=START, stop_id=STOP, pad_id=PAD)
  strategy = decoding.BeamSearch(3, 0.6)
  fixed = decoding.make_decoder(model, strategy, **kw)
  queue = decoding.make_decoder(model, strategy, in_flight=True, **kw)
  assert isinstance(queue, decoding.QueueDecoder)
  expected = decoding.decode_in_batches(fixed, params, src_NS, 4, mask_NS)
  got = decoding.decode_in_batches(queue, params, src_NS, 4, mask_NS)
  np.testing.assert_array_equal(got, expected)


def test_the_queue_tail_is_stepped_by_fewer_slots():
  model, params, src_NS, mask_NS = _setup("luong_feeding_bidirectional",
                                          n=70)
  tokens_NT, logp_N = _alone(model, params, src_NS, mask_NS)
  lengths_N = _lengths(tokens_NT)
  fn = jax.jit(lambda p, x, m, shrink: decoding.decode_queue(
      model, p, x, m, slots=32, max_len=MAX_LEN, start_id=START,
      stop_id=STOP, pad_id=PAD, score=True, shrink=shrink),
               static_argnums=3)
  # 32 slots, 8 refilled a step; the tail by 16 slots.
  assert inflight.levels(32, True) == [32, 16]
  assert inflight.levels(256, True) == [256, 128, 32, 8]
  assert inflight.levels(15, True) == [15]
  assert inflight.levels(64, False) == [64]
  for shrink, shrink_to in [(True, 16), (False, 0)]:
    out = jax.device_get(fn(params, src_NS, mask_NS, shrink))
    np.testing.assert_array_equal(out.tokens_NT, tokens_NT)
    np.testing.assert_allclose(out.log_probs_N, logp_N, rtol=1e-6,
                               atol=1e-6)
    steps, rows = _stepped(lengths_N.tolist(), 32, 8, shrink_to)
    assert (int(out.steps), int(out.rows_stepped)) == (steps, rows)
  assert rows == steps * 32 and _stepped(lengths_N.tolist(), 32, 8, 8)[1] < rows


def test_plan_queue_orders_by_length_and_cuts_the_queue_by_width():
  rng = np.random.default_rng(3)
  n, count, width = 300, 290, 25
  ends_N = np.minimum(rng.geometric(1 / 6, n), width)
  mask_NS = np.arange(width)[None] < ends_N[:, None]
  order_N, widths = decoding.plan_queue(mask_NS, count)
  # The real sentences by length, then the padding rows in their place.
  assert sorted(order_N[:count]) == list(range(count))
  np.testing.assert_array_equal(order_N[count:], np.arange(count, n))
  assert (np.diff(ends_N[order_N[:count]]) >= 0).all()
  assert sum(rows for rows, _ in widths) == n and len(widths) <= 4
  start = 0
  for rows, w in widths:
    longest = ends_N[order_N[start:start + rows]].max()
    assert w == min(width, -(-longest // 4) * 4)
    start += rows
  assert [w for _, w in widths] == sorted({w for _, w in widths})
  # Nothing to save: no mask, or every source as wide as the queue.
  assert decoding.plan_queue(None, count) is None
  assert decoding.plan_queue(np.ones((n, 8), bool), count) is None


@pytest.mark.parametrize("strategy", [decoding.Greedy(),
                                      decoding.BeamSearch(3, 0.6)])
def test_a_queue_encoded_in_width_chunks_decodes_as_each_sentence_alone(
    strategy):
  """300 sentences of 1 to 12 tokens (most short): the queue is decoded
  by length in chunks encoded at 4, 8 and 12 tokens, and each sentence
  gets the tokens of decoding it alone at the full width."""
  model, params, _, _ = _setup("luong_feeding_bidirectional")
  rng = np.random.default_rng(1)
  n, width = 300, 12
  src_NS = rng.integers(3, 9, size=(n, width)).astype(np.int32)
  ends_N = np.minimum(rng.geometric(1 / 4, n), width)
  mask_NS = np.arange(width)[None] < ends_N[:, None]
  order_N, widths = decoding.plan_queue(mask_NS, n)
  assert [w for _, w in widths] == [4, 8, 12], widths
  kw = dict(max_len=MAX_LEN, start_id=START, stop_id=STOP, pad_id=PAD)
  queue = decoding.make_decoder(model, strategy, in_flight=True, **kw)
  got = decoding.decode_in_batches(queue, params, src_NS, 16, mask_NS)
  one = decoding.make_decoder(model, strategy, **kw)
  alone = np.concatenate([np.asarray(one(params, src_NS[i:i + 1],
                                         mask_NS[i:i + 1])) for i in range(n)])
  np.testing.assert_array_equal(got, alone)
  assert len(set(_lengths(alone).tolist())) >= 3
