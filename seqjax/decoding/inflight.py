"""In-flight batching for greedy decoding: a queue of N sentences decoded
by B slots in one compiled ``lax.while_loop``.

A fixed batch steps every row until its longest sentence ends. Here a slot
whose sentence ends (stop token or ``max_len``) takes the next sentence of
the queue at the next step, so the loop steps about the sum of the
sentences' lengths over B. All N sentences are encoded up front, a
queue ordered by source length in chunks of their own width
(``encode_queue``: padding costs the encoder nothing); a slot
taking sentence i gets row i of the encoder's state (carries and, with
attention, the sentence's memory), written into its row alone: at most R
slots (``refill_rows``) are refilled a step, so a step gathers R rows, not
B, and a slot freed beyond them idles a step. Every sentence's tokens and
score are those of decoding it alone: a row's step reads only that row.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from seqjax.decoding import strategies

Array = jax.Array


class InFlight(NamedTuple):
  """A queue's decoding."""

  tokens_NT: Array                     # int32; pad_id after the stop token
  steps: Array                         # int32: loop steps run
  rows_stepped: Array                  # int32: slots x steps
  log_probs_N: Optional[Array] = None  # the model's log P of the tokens


class _Slots(NamedTuple):
  t: Array
  next_: Array          # the queue's next sentence
  sent_B: Array         # each slot's sentence; N: idle
  pos_B: Array          # each slot's step within its sentence
  state: Any            # the slots' decoder state
  feed_B: Array         # the next input tokens
  tokens_NT: Array
  logp_N: Optional[Array]


def encode_queue(model, params, src_NS: Array, src_mask_NS: Optional[Array],
                 widths: tuple = ()):
  """The encoder's state of a queue's N sentences. ``widths``: consecutive
  chunks of the queue ``((rows, width), ...)``, each encoded at its own
  width, the leaves that span the source padded back to the queue's width
  (zeros; the mask False): a queue sorted by source length no longer
  encodes its short sentences' padding. Empty: all at the queue's width."""
  encode = lambda src, mask: model.apply(params, src, mask,
                                         method="encode_for_decoding")
  if not widths:
    return encode(src_NS, src_mask_NS)
  full = jax.eval_shape(encode, src_NS[:1], src_mask_NS[:1])
  def pad(x, like):
    if x.ndim < 2 or x.shape[1] == like.shape[1]:
      return x
    grow = [(0, 0), (0, like.shape[1] - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, grow)
  parts, start = [], 0
  for rows, width in widths:
    part = encode(src_NS[start:start + rows, :width],
                  src_mask_NS[start:start + rows, :width])
    parts.append(jax.tree.map(pad, part, full))
    start += rows
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _count_rows(state_N) -> int:
  return jax.tree.leaves(state_N)[0].shape[0]


def _rows(tree, index_B: Array):
  return jax.tree.map(lambda x: x[index_B], tree)


def refill_rows(slots: int) -> int:
  """The most slots refilled in one step by default: a quarter of them (at
  least 8, at most all). Sentences of about 12 steps free B/12 slots a
  step, so a slot rarely waits; refilling all B rows each step would cost
  a gather of every slot's attention memory."""
  return min(slots, max(8, slots // 4))


class Refill(NamedTuple):
  """Which free slots take which queued sentences this step."""

  take_B: Array     # the slots refilled
  sent_B: Array     # each slot's sentence after the refill; N: idle
  slot_R: Array     # the refilled slots in slot order; B (dropped) after
  new_R: Array      # their sentences (clipped to a real row)
  next_: Array      # the queue's next sentence after the refill


def take_slots(free_B: Array, sent_B: Array, next_: Array, count: Array,
               n: int, refill: int) -> Refill:
  """Free slots (finished now, or idle) take the queue's next sentences in
  slot order, at most ``refill`` of them; the others idle (N)."""
  slots = free_B.shape[0]
  rank_B = jnp.cumsum(free_B.astype(jnp.int32)) - 1
  take_B = free_B & (rank_B < refill) & (next_ + rank_B < count)
  slot_R = jnp.full((refill,), slots, jnp.int32).at[
      jnp.where(take_B, rank_B, refill)].set(
          jnp.arange(slots, dtype=jnp.int32), mode="drop")
  new_R = jnp.minimum(next_ + jnp.arange(refill, dtype=jnp.int32), n - 1)
  sent_B = jnp.where(take_B, next_ + rank_B, jnp.where(free_B, n, sent_B))
  return Refill(take_B, sent_B, slot_R, new_R, next_ + take_B.sum())


def _refill(loop: _Slots, done_B: Array, token_B: Array, state, state_N,
            count: Array, start_id: int, refill: int) -> tuple:
  """-> (sent_B, pos_B, state, feed_B, next_): only the refilled rows of
  the state are gathered and written."""
  r = take_slots(done_B | (loop.sent_B >= count), loop.sent_B, loop.next_,
                 count, _count_rows(state_N), refill)
  state = jax.tree.map(lambda x, x_N: x.at[r.slot_R].set(x_N[r.new_R],
                                                          mode="drop"),
                       state, state_N)
  feed_B = jnp.where(r.take_B, start_id, token_B)
  pos_B = jnp.where(r.take_B, 0, loop.pos_B + 1)
  return r.sent_B, pos_B, state, feed_B, r.next_


def _body(step, select, state_N, count, loop: _Slots, *, max_len: int,
          start_id: int, stop_id: Optional[int], refill: int) -> _Slots:
  logits_BV, state = step(loop.feed_B, loop.state)
  token_B = select(logits_BV, None)
  live_B = loop.sent_B < count
  # Idle slots write to row N: dropped.
  tokens_NT = loop.tokens_NT.at[loop.sent_B, loop.pos_B].set(
      token_B, mode="drop")
  logp_N = loop.logp_N
  if logp_N is not None:
    logp_BV = jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)
    chosen_B = jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]
    logp_N = logp_N.at[loop.sent_B].add(chosen_B, mode="drop")
  ends_B = loop.pos_B + 1 >= max_len
  if stop_id is not None:
    ends_B = ends_B | (token_B == stop_id)
  sent_B, pos_B, state, feed_B, next_ = _refill(
      loop, live_B & ends_B, token_B, state, state_N, count, start_id,
      refill)
  return _Slots(loop.t + 1, next_, sent_B, pos_B, state, feed_B, tokens_NT,
                logp_N)


def levels(slots: int, shrink: bool) -> list[int]:
  """The slot counts the loop runs with: once the queue is empty and at
  most half the slots are live, the live ones move to a loop of half as
  many, then of a quarter as many each time (down to 8), as a batch drops
  its finished sentences: the queue's tail steps few idle rows. Each level
  is one more loop to compile: halving all the way costs 256 slots of beam
  search 7 s more compiling; halving once, 1.7 s (benchmarks/RESULTS.md)."""
  out = [slots]
  if shrink and slots // 2 >= 8:
    out.append(slots // 2)
  while shrink and out[-1] // 4 >= 8:
    out.append(out[-1] // 4)
  return out


def run_levels(body, loop, *, slots: int, shrink: bool, count: Array,
               compact) -> tuple:
  """``loop`` run by ``body(loop, slots)`` at each of ``levels``; between
  levels ``compact(loop, keep_b)`` keeps the slots ``keep_b`` (live first).
  ``loop`` has ``next_`` and ``sent_B``; -> (loop, steps, rows stepped)."""
  steps = rows = jnp.zeros((), jnp.int32)
  sizes = levels(slots, shrink)
  for i, size in enumerate(sizes):
    after = sizes[i + 1] if i + 1 < len(sizes) else 0
    def running(loop, after=after):
      live_B = loop.sent_B < count
      waiting = loop.next_ < count
      return (jnp.any(live_B) | waiting) & (
          waiting | (live_B.sum() > after))
    def counted(carry, size=size):
      loop, steps = carry
      return body(loop, size), steps + 1
    loop, level_steps = jax.lax.while_loop(
        lambda carry: running(carry[0]), counted,
        (loop, jnp.zeros((), jnp.int32)))
    steps, rows = steps + level_steps, rows + level_steps * size
    if after:
      order_B = jnp.argsort(~(loop.sent_B < count), stable=True)
      loop = compact(loop, order_B[:after])
  return loop, steps, rows


def slot_loop(step, state_N, select, *, slots: int, max_len: int,
              start_id: int, stop_id: Optional[int], pad_id: int,
              count: Optional[Array] = None, score: bool = False,
              refill: Optional[int] = None, shrink: bool = True
              ) -> InFlight:
  """Decodes the first ``count`` (default all) of the N sentences whose
  encoder state is ``state_N`` with ``slots`` rows: ``step(tokens_B,
  state) -> (logits_BV, state)``, ``select(logits_BV, None) -> tokens_B``;
  at most ``refill`` slots (default ``refill_rows(slots)``) take a new
  sentence a step; ``shrink``: fewer slots for the queue's tail
  (``levels``)."""
  n = _count_rows(state_N)
  refill = min(refill or refill_rows(slots), slots)
  count = jnp.asarray(n if count is None else count, jnp.int32)
  first_B = jnp.arange(slots, dtype=jnp.int32)
  sent_B = jnp.where(first_B < count, first_B, n)
  loop = _Slots(
      t=jnp.zeros((), jnp.int32), next_=jnp.minimum(count, slots),
      sent_B=sent_B, pos_B=jnp.zeros((slots,), jnp.int32),
      state=_rows(state_N, jnp.minimum(first_B, n - 1)),
      feed_B=jnp.full((slots,), start_id, jnp.int32),
      tokens_NT=jnp.full((n, max_len), pad_id, jnp.int32),
      logp_N=jnp.zeros((n,), jnp.float32) if score else None)
  body = lambda loop, size: _body(step, select, state_N, count, loop,
                                  max_len=max_len, start_id=start_id,
                                  stop_id=stop_id, refill=min(refill, size))
  compact = lambda loop, keep_b: loop._replace(
      sent_B=loop.sent_B[keep_b], pos_B=loop.pos_B[keep_b],
      state=_rows(loop.state, keep_b), feed_B=loop.feed_B[keep_b])
  loop, steps, rows = run_levels(body, loop, slots=slots, shrink=shrink,
                                 count=count, compact=compact)
  return InFlight(loop.tokens_NT, steps, rows, loop.logp_N)


def check_in_flight(model, strategy, feedback: str = "tokens") -> None:
  """Raises ValueError for a decoding in-flight batching cannot do."""
  if not isinstance(strategy, (strategies.Greedy, strategies.BeamSearch)):
    raise ValueError(f"in-flight batching decodes greedily or by beam "
                     f"search, not by {strategy}: a sampled sentence would "
                     "depend on its slot")
  if feedback != "tokens" or not getattr(model, "takes_decoder_input", True):
    raise ValueError(f"in-flight batching steps a model fed its tokens; "
                     f"{type(model).__name__} with feedback={feedback!r} "
                     "decodes otherwise")
