"""In-flight batching for beam search: a queue of N sentences searched by B
slots of K beams in one compiled ``lax.while_loop``.

A slot is one sentence's K beams, rows b*K .. b*K + K - 1 of the decoder
state (``seqjax.decoding.beam``'s layout; a ``Shared`` attention memory
keeps one row a slot). Every slot steps with its own position: a step is
``beam``'s step with each sentence's t. A sentence is settled when its
search would stop alone (no live hypothesis can beat its N-th finished
one, or ``max_len``); its N best are written out and its slot takes the
next queued sentence at the next step, its rows set from the encoder's
state (at most R slots a step, ``inflight.refill_rows``). Each sentence's
hypotheses are those of searching it alone: a row's step reads only its
own slot's rows.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from seqjax.decoding import beam as beam_lib
from seqjax.decoding import inflight
from seqjax.decoding.strategies import BeamSearch
from seqjax.per_beam import Shared

Array = jax.Array


class InFlightBeams(NamedTuple):
  """A queue's N best hypotheses a sentence, best first (letters: Q queued
  sentences, N returned hypotheses)."""

  tokens_QNT: Array     # int32; pad_id after the stop token
  scores_QN: Array      # float32: log_probs / penalty(lengths)
  log_probs_QN: Array
  lengths_QN: Array     # int32: tokens emitted, the stop token included
  steps: Array          # int32: loop steps run
  rows_stepped: Array   # int32: slots x beams x steps


class _Out(NamedTuple):
  tokens_QNT: Array
  scores_QN: Array
  log_probs_QN: Array
  lengths_QN: Array


class _Queue(NamedTuple):
  steps: Array
  next_: Array
  sent_B: Array         # each slot's sentence; Q: idle
  search: beam_lib._Search  # t: each slot's step (B,)
  out: _Out


def _map_state(per_beam, shared, *trees):
  """``per_beam`` on the per-beam leaves of ``trees`` (matching decoder
  states), ``shared`` on those of their ``Shared`` parts."""
  is_shared = lambda x: isinstance(x, Shared)
  def pick(x, *rest):
    if is_shared(x):
      return Shared(jax.tree.map(shared, x.value, *(r.value for r in rest)))
    return per_beam(x, *rest)
  return jax.tree.map(pick, *trees, is_leaf=is_shared)


def _fresh(batch: int, k: int, max_len: int, start_id: int,
           pad_id: int) -> dict:
  """A slot's search fields before its first step: beam 0 the one real
  hypothesis."""
  first_BK = jnp.where(jnp.arange(k) == 0, 0.0, beam_lib.NEG_INF)
  return dict(
      t=jnp.zeros((batch,), jnp.int32),
      last_BK=jnp.full((batch, k), start_id, jnp.int32),
      alive_tokens_BKT=jnp.full((batch, k, max_len), pad_id, jnp.int32),
      alive_logp_BK=jnp.broadcast_to(first_BK, (batch, k)),
      fin_tokens_BKT=jnp.full((batch, k, max_len), pad_id, jnp.int32),
      fin_score_BK=jnp.full((batch, k), beam_lib.NEG_INF),
      fin_logp_BK=jnp.full((batch, k), beam_lib.NEG_INF),
      fin_len_BK=jnp.zeros((batch, k), jnp.int32))


def _refill(search, take_B, r: inflight.Refill, state_Q, *, k: int,
            max_len: int, start_id: int, pad_id: int):
  """The search with the refilled slots reset and their rows of the
  decoder state written from the encoder's (K copies a per-beam row)."""
  slots = take_B.shape[0]
  rows_X = (r.slot_R[:, None] * k + jnp.arange(k)).reshape(-1)
  state = _map_state(
      lambda x, x_Q: x.at[rows_X].set(jnp.repeat(x_Q[r.new_R], k, axis=0),
                                      mode="drop"),
      lambda x, x_Q: x.at[r.slot_R].set(x_Q[r.new_R], mode="drop"),
      search.state, state_Q)
  fresh = _fresh(slots, k, max_len, start_id, pad_id)
  def reset(name):
    old = getattr(search, name)
    take = take_B.reshape((-1,) + (1,) * (old.ndim - 1))
    return jnp.where(take, fresh[name], old)
  return search._replace(state=state, **{name: reset(name) for name in fresh})


def _settled(s, strategy: BeamSearch, *, max_len: int,
             stop_id: Optional[int], early_stop: bool) -> Array:
  """Whether each slot's search is over, as ``beam_search`` stops alone."""
  over_B = s.t >= max_len
  if early_stop and stop_id is not None:
    best_B = s.alive_logp_BK[:, 0] / beam_lib.penalty(
        max_len, strategy.length_penalty)
    over_B = over_B | ~(best_B > s.fin_score_BK[:, strategy.n_best - 1])
  return over_B


def _write(out: _Out, s, done_B: Array, sent_B: Array, n: int,
           queued: int) -> _Out:
  """The settled slots' N best written to their sentences' rows."""
  row_B = jnp.where(done_B, sent_B, queued)
  put = lambda old, new: old.at[row_B].set(new[:, :n], mode="drop")
  return _Out(put(out.tokens_QNT, s.fin_tokens_BKT),
              put(out.scores_QN, s.fin_score_BK),
              put(out.log_probs_QN, s.fin_logp_BK),
              put(out.lengths_QN, s.fin_len_BK))


def _compact(q: _Queue, keep_b: Array, k: int) -> _Queue:
  """The queue with only the slots ``keep_b``."""
  rows_X = (keep_b[:, None] * k + jnp.arange(k)).reshape(-1)
  s = q.search
  state = _map_state(lambda x: x[rows_X], lambda x: x[keep_b], s.state)
  per_slot = {name: getattr(s, name)[keep_b]
              for name in beam_lib._Search._fields if name != "state"}
  return q._replace(sent_B=q.sent_B[keep_b],
                    search=beam_lib._Search(state=state, **per_slot))


def _body(step, state_Q, count, q: _Queue, *, strategy: BeamSearch,
          refill: int, max_len: int, start_id: int, pad_id: int,
          stop_id: Optional[int], early_stop: bool) -> _Queue:
  queued = inflight._count_rows(state_Q)
  s = step(q.search)
  live_B = q.sent_B < count
  done_B = live_B & _settled(s, strategy, max_len=max_len, stop_id=stop_id,
                             early_stop=early_stop)
  out = _write(q.out, s, done_B, q.sent_B, strategy.n_best, queued)
  r = inflight.take_slots(done_B | ~live_B, q.sent_B, q.next_, count,
                          queued, refill)
  s = _refill(s, r.take_B, r, state_Q, k=strategy.beam_size,
              max_len=max_len, start_id=start_id, pad_id=pad_id)
  return _Queue(q.steps + 1, r.next_, r.sent_B, s, out)


def beam_queue(model, params, src_QS: Array, src_mask_QS: Optional[Array],
               strategy: BeamSearch, *, slots: int, max_len: int,
               start_id: int, stop_id: Optional[int] = None,
               pad_id: int = 0, count: Optional[Array] = None,
               refill: Optional[int] = None, early_stop: bool = True,
               shrink: bool = True, widths: tuple = ()) -> InFlightBeams:
  """The first ``count`` (default all) of Q sentences beam-searched by
  ``slots`` slots of ``strategy.beam_size`` rows; each sentence's
  hypotheses those of ``beam.beam_search`` on it alone. ``refill`` and
  ``shrink`` as ``inflight.slot_loop``'s, ``widths`` as
  ``inflight.encode_queue``'s."""
  if not getattr(model, "takes_decoder_input", True):
    raise ValueError(f"beam search needs a model decoded step by step; "
                     f"{type(model).__name__} predicts all steps at once")
  k, n = strategy.beam_size, strategy.n_best
  state_Q = inflight.encode_queue(model, params, src_QS, src_mask_QS, widths)
  queued = src_QS.shape[0]
  count = jnp.asarray(queued if count is None else count, jnp.int32)
  refill = min(refill or inflight.refill_rows(slots), slots)
  first_B = jnp.arange(slots, dtype=jnp.int32)
  rows_B = jnp.minimum(first_B, queued - 1)
  state = _map_state(lambda x: jnp.repeat(x[rows_B], k, axis=0),
                     lambda x: x[rows_B], state_Q)
  search = beam_lib._Search(state=state, **_fresh(slots, k, max_len,
                                                  start_id, pad_id))
  out = _Out(jnp.full((queued, n, max_len), pad_id, jnp.int32),
             jnp.full((queued, n), beam_lib.NEG_INF),
             jnp.full((queued, n), beam_lib.NEG_INF),
             jnp.zeros((queued, n), jnp.int32))
  q = _Queue(jnp.zeros((), jnp.int32), jnp.minimum(count, slots),
             jnp.where(first_B < count, first_B, queued), search, out)
  step = functools.partial(
      beam_lib._step, model, params, k=k, max_len=max_len, stop_id=stop_id,
      alpha=float(strategy.length_penalty))
  def body(q, size):
    return _body(step, state_Q, count, q, strategy=strategy,
                 refill=min(refill, size), max_len=max_len,
                 start_id=start_id, pad_id=pad_id, stop_id=stop_id,
                 early_stop=early_stop)
  q, steps, rows = inflight.run_levels(
      body, q, slots=slots, shrink=shrink, count=count,
      compact=lambda q, keep_b: _compact(q, keep_b, k))
  return InFlightBeams(*q.out, steps=steps, rows_stepped=rows * k)
