"""In-flight beam search (``seqjax.decoding.inflight_beam``) against beam
search of each sentence alone, and its step count against a simulation of
the slots fed each sentence's own search length."""

import jax
import numpy as np
import pytest

from seqjax import decoding
from seqjax.decoding import beam as beam_lib
from seqjax.decoding import inflight_beam
from tests import test_inflight as queue_test

START, STOP, PAD, MAX_LEN = (queue_test.START, queue_test.STOP,
                             queue_test.PAD, queue_test.MAX_LEN)
IDS = dict(max_len=MAX_LEN, start_id=START, stop_id=STOP, pad_id=PAD)
# Added to test_inflight's stop biases: these models' searches then end at
# varied steps, some at max_len.
BEAM_STOP_BIAS = {"plain_lstm": 0.25, "luong_feeding_bidirectional": -0.5}


def _setup(arch, n=11):
  model, params, src_QS, mask_QS = queue_test._setup(arch, n=n)
  readout = params["params"]["readout"]
  readout["bias"] = readout["bias"].at[STOP].add(BEAM_STOP_BIAS[arch])
  return model, params, src_QS, mask_QS


def _alone(model, params, src_QS, mask_QS, strategy, **ids):
  """Each sentence searched in a batch of one -> Beams, fields stacked."""
  fn = jax.jit(lambda p, x, m: beam_lib.beam_search(model, p, x, m, strategy,
                                                    **ids))
  outs = [jax.device_get(fn(params, src_QS[i:i + 1], mask_QS[i:i + 1]))
          for i in range(len(src_QS))]
  return beam_lib.Beams(*(np.concatenate([np.atleast_1d(getattr(o, f))
                                          for o in outs])
                          for f in beam_lib.Beams._fields))


def _queued(model, params, src_QS, mask_QS, strategy, slots, count=None,
            refill=None, **ids):
  fn = jax.jit(lambda p, x, m, c: inflight_beam.beam_queue(
      model, p, x, m, strategy, slots=slots, count=c, refill=refill, **ids))
  return jax.device_get(fn(params, src_QS, mask_QS, count))


def _check_equal(got, want, n=None):
  n = len(want.tokens_BNT) if n is None else n
  np.testing.assert_array_equal(got.tokens_QNT[:n], want.tokens_BNT)
  np.testing.assert_array_equal(got.lengths_QN[:n], want.lengths_BN)
  # XLA rounds a row's matmuls by the batch's shape (see test_inflight).
  np.testing.assert_allclose(got.scores_QN[:n], want.scores_BN, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(got.log_probs_QN[:n], want.log_probs_BN,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", list(queue_test.ARCHITECTURES))
@pytest.mark.parametrize("slots, k, n_best, alpha", [
    (1, 2, 1, 0.0), (3, 3, 2, 0.6), (4, 2, 1, 1.0)])
def test_queue_equals_each_sentence_searched_alone(arch, slots, k, n_best,
                                                   alpha):
  model, params, src_QS, mask_QS = _setup(arch)
  strategy = decoding.BeamSearch(k, alpha, n_best)
  want = _alone(model, params, src_QS, mask_QS, strategy, **IDS)
  # Searches end at different steps, some at max_len.
  assert len(set(want.steps.tolist())) >= 3, want.steps
  assert (want.steps == MAX_LEN).any() and (want.steps < MAX_LEN).any()
  got = _queued(model, params, src_QS, mask_QS, strategy, slots, **IDS)
  _check_equal(got, want)
  steps = queue_test._simulated_steps(want.steps, slots)
  assert int(got.steps) == steps
  assert int(got.rows_stepped) == steps * slots * k


def test_queue_equals_the_fixed_batch_search():
  model, params, src_QS, mask_QS = _setup(
      "luong_feeding_bidirectional", n=9)
  strategy = decoding.BeamSearch(3, 0.6, 3)
  want = jax.device_get(jax.jit(lambda p, x, m: beam_lib.beam_search(
      model, p, x, m, strategy, **IDS))(params, src_QS, mask_QS))
  got = _queued(model, params, src_QS, mask_QS, strategy, slots=2, **IDS)
  _check_equal(got, want)


def test_capped_refill_and_count():
  model, params, src_QS, mask_QS = _setup(
      "luong_feeding_bidirectional", n=13)
  strategy = decoding.BeamSearch(2, 0.6)
  want = _alone(model, params, src_QS[:10], mask_QS[:10], strategy, **IDS)
  got = _queued(model, params, src_QS, mask_QS, strategy, slots=5,
                count=np.int32(10), refill=1, **IDS)
  _check_equal(got, want, n=10)
  assert (got.tokens_QNT[10:] == PAD).all()
  assert (got.scores_QN[10:] == -np.inf).all()
  steps = queue_test._capped_steps(want.steps.tolist(), 5, 1)
  assert steps > queue_test._simulated_steps(want.steps, 5)
  assert int(got.steps) == steps


def test_no_stop_token_runs_every_sentence_max_len_steps():
  model, params, src_QS, mask_QS = _setup("plain_lstm", n=5)
  strategy = decoding.BeamSearch(2)
  ids = dict(IDS, stop_id=None)
  want = _alone(model, params, src_QS, mask_QS, strategy, **ids)
  got = _queued(model, params, src_QS, mask_QS, strategy, slots=2, **ids)
  _check_equal(got, want)
  assert int(got.steps) == 3 * MAX_LEN


def test_the_queue_tail_is_searched_by_fewer_slots():
  model, params, src_QS, mask_QS = _setup("plain_lstm", n=70)
  strategy = decoding.BeamSearch(2, 0.6)
  want = _alone(model, params, src_QS, mask_QS, strategy, **IDS)
  lengths = want.steps.tolist()
  for shrink, shrink_to in [(True, 16), (False, 0)]:
    got = jax.device_get(jax.jit(lambda p, x, m, shrink=shrink: (
        inflight_beam.beam_queue(model, p, x, m, strategy, slots=32,
                                 shrink=shrink, **IDS)))(
                                     params, src_QS, mask_QS))
    _check_equal(got, want)
    steps, rows = queue_test._stepped(lengths, 32, 8, shrink_to)
    assert (int(got.steps), int(got.rows_stepped)) == (steps, rows * 2)
  assert queue_test._stepped(lengths, 32, 8, 8)[1] < rows
