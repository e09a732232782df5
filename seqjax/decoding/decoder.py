"""One decoder factory for every model and strategy.

``make_decoder(model, strategy, max_len=..., start_id=...)`` is a jitted
``decode(params, src_BS, src_mask_BS=None, key=None) -> tokens_BT``,
compiled once per input shape. How it decodes follows the model:

* a ``Seq2Seq`` fed its own tokens: ``loop.token_loop`` with the strategy's
  ``select`` (greedy, sampling), or beam search (``seqjax.decoding.beam``);
* a ``Seq2Seq`` trained on its softmax fed back (``feedback="softmax"``):
  the same loop fed the softmax (``Seq2Seq.decode_step_dense``);
* a model that predicts every step at once (``RepeatVectorSeq2Seq``): one
  forward pass, the strategy selecting each step's token.

Greedy and beam search ignore the key; sampling needs one. The decoders
call a model's methods by name (``model.apply(params, ...,
method="decode_step")``): any Flax module with ``encode_for_decoding`` and
``decode_step`` (``decode_step_dense`` to be fed its softmax) decodes like a
``Seq2Seq``, such as an ``Ensemble`` of them (``seqjax.decoding.ensemble``).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.decoding import beam as beam_lib
from seqjax.decoding import inflight as inflight_lib
from seqjax.decoding import inflight_beam
from seqjax.decoding import loop as loop_lib
from seqjax.decoding import strategies
from seqjax.models import Seq2Seq

Array = jax.Array
FEEDBACKS = ("tokens", "softmax")


def make_inference_fns(model: Seq2Seq):
  """The tutorial's split as two jitted functions usable on their own:
  ``encode(params, src_BS[, src_mask_BS]) -> carry`` and
  ``decode_step(params, token_B, carry) -> (probabilities_BV, carry)``."""

  @jax.jit
  def encode(params, src_BS, src_mask_BS=None):
    return model.apply(params, src_BS, src_mask_BS,
                       method="encode_for_decoding")

  @jax.jit
  def decode_step(params, token_B, carry):
    logits_BV, carry = model.apply(params, token_B, carry,
                                   method="decode_step")
    return jax.nn.softmax(logits_BV, axis=-1), carry

  return encode, decode_step


def check_decoder(model, strategy, feedback: str = "tokens",
                  return_attention: bool = False) -> None:
  """Raises ValueError for a strategy or output the model cannot give."""
  stepwise = getattr(model, "takes_decoder_input", True)
  if feedback not in FEEDBACKS:
    raise ValueError(f"unknown feedback {feedback!r}; expected one of "
                     f"{FEEDBACKS}")
  if strategies.is_beam(strategy) and (not stepwise or feedback != "tokens"):
    raise ValueError(f"beam search needs a model decoded step by step, fed "
                     f"its tokens; {type(model).__name__} with "
                     f"feedback={feedback!r} decodes otherwise")
  attention = getattr(getattr(model, "settings", None), "attention", "none")
  if return_attention and (strategies.is_beam(strategy)
                           or attention == "none"):
    raise ValueError("return_attention needs a model that attends "
                     "(attention='none' has no weights), decoded without "
                     "beam search")


def decode(model, params, src_BS: Array, src_mask_BS: Optional[Array] = None,
           key: Optional[Array] = None, strategy=strategies.Greedy(), *,
           max_len: int, start_id: int, stop_id: Optional[int] = None,
           pad_id: int = 0, feedback: str = "tokens",
           return_attention: bool = False, score: bool = False,
           early_stop: bool = True):
  """A batch decoded by ``strategy`` -> ``loop.Decoded`` (``beam.Beams`` for
  beam search). ``score``: also each sequence's log-probability.
  ``early_stop=False`` runs all ``max_len`` steps (the same tokens). Jit
  it, or take ``make_decoder``."""
  check_decoder(model, strategy, feedback, return_attention)
  if isinstance(strategy, strategies.Sampling) and key is None:
    raise ValueError("sampling needs a random key")
  ends = dict(stop_id=stop_id, pad_id=pad_id)
  if strategies.is_beam(strategy):
    return beam_lib.beam_search(model, params, src_BS, src_mask_BS, strategy,
                                max_len=max_len, start_id=start_id,
                                early_stop=early_stop, **ends)
  if not getattr(model, "takes_decoder_input", True):
    if max_len != model.out_len:
      raise ValueError(f"max_len={max_len} differs from the model's "
                       f"out_len={model.out_len}")
    return loop_lib.select_each_step(
        strategy.select, model.apply(params, src_BS, src_mask_BS), key, **ends)
  step, state, first_feed = _stepwise(model, params, src_BS, src_mask_BS,
                                      start_id, feedback)
  return loop_lib.token_loop(
      step, state, first_feed, strategy.select, key, max_len=max_len,
      early_stop=early_stop, score=score,
      src_len=src_BS.shape[1] if return_attention else None, **ends)


def _stepwise(model, params, src_BS, src_mask_BS, start_id: int,
              feedback: str):
  """-> (step(feed, state) -> (logits_BV, state), the encoder's state, the
  first feed: the start tokens, or their one-hot rows fed densely)."""
  state = model.apply(params, src_BS, src_mask_BS,
                      method="encode_for_decoding")
  start_B = jnp.full((src_BS.shape[0],), start_id, jnp.int32)
  method = "decode_step"
  if feedback == "softmax":
    start_B = jax.nn.one_hot(start_B, model.tgt_vocab, dtype=jnp.float32)
    method = "decode_step_dense"
  step = lambda feed, state: model.apply(params, feed, state, method=method)
  return step, state, start_B


def decode_queue(model, params, src_NS: Array,
                 src_mask_NS: Optional[Array] = None,
                 count: Optional[Array] = None, *, slots: int, max_len: int,
                 start_id: int, stop_id: Optional[int] = None,
                 pad_id: int = 0, score: bool = False,
                 refill: Optional[int] = None, strategy=strategies.Greedy(),
                 shrink: bool = True, widths: tuple = ()):
  """The first ``count`` (default all) of N sentences decoded greedily by
  ``slots`` rows, a finished sentence's slot refilled with the next, at
  most ``refill`` a step, the tail by fewer slots with ``shrink``
  (``seqjax.decoding.inflight``): each sentence's
  tokens (and, with ``score``, log-probability) are those of decoding it
  alone -> ``InFlight``. A ``BeamSearch`` ``strategy``: ``slots`` slots
  of K rows (``seqjax.decoding.inflight_beam``) -> ``InFlightBeams``.
  ``widths``: the queue's chunks encoded at their own widths
  (``inflight.encode_queue``)."""
  if strategies.is_beam(strategy):
    return inflight_beam.beam_queue(
        model, params, src_NS, src_mask_NS, strategy, slots=slots,
        max_len=max_len, start_id=start_id, stop_id=stop_id, pad_id=pad_id,
        count=count, refill=refill, shrink=shrink, widths=widths)
  state_N = inflight_lib.encode_queue(model, params, src_NS, src_mask_NS,
                                      widths)
  step = lambda feed, state: model.apply(params, feed, state,
                                         method="decode_step")
  return inflight_lib.slot_loop(
      step, state_N, strategies.Greedy().select, slots=slots,
      max_len=max_len, start_id=start_id, stop_id=stop_id, pad_id=pad_id,
      count=count, score=score, refill=refill, shrink=shrink)


# Queues of fewer sentences than this a chunk are encoded at one width.
MIN_CHUNK = 64


def plan_queue(src_mask_NS, count: int, chunks: int = 8, quantum: int = 4):
  """-> (order_N, widths): the queue's first ``count`` sentences ordered
  by source length (the padding rows after them kept last), cut into at
  most ``chunks`` consecutive chunks of about equal rows, each as wide as
  its longest source rounded up to ``quantum`` (``inflight.encode_queue``'s
  ``widths``). None where that saves nothing: no mask, or one chunk at the
  queue's width."""
  if src_mask_NS is None:
    return None
  mask_NS = np.asarray(src_mask_NS, bool)
  n, width = mask_NS.shape
  # The last real position + 1 (a mask is a prefix of each row).
  ends_N = np.where(mask_NS.any(1), width - np.argmax(mask_NS[:, ::-1], 1), 1)
  order_N = np.concatenate([np.argsort(ends_N[:count], kind="stable"),
                            np.arange(count, n)])
  ends_N = ends_N[order_N]
  cuts = np.linspace(0, n, max(1, min(chunks, n // MIN_CHUNK)) + 1)
  widths = []
  bounds = cuts.astype(int).tolist()
  for a, b in zip(bounds[:-1], bounds[1:]):
    w = min(width, -(-int(ends_N[a:b].max()) // quantum) * quantum)
    if widths and widths[-1][1] == w:  # one encoder call for both
      widths[-1] = (widths[-1][0] + b - a, w)
    else:
      widths.append((b - a, w))
  if len(widths) == 1 and widths[0][1] == width:
    return None
  return order_N, tuple(widths)


class QueueDecoder:
  """In-flight decoding as a decoder: ``decode(params, src_NS,
  src_mask_NS=None, key=None)`` -> tokens (N, max_len) (beam search: the
  best hypothesis'; with ``full``, ``InFlight`` or ``InFlightBeams``), all
  N sentences in one queue, by N slots unless ``slots`` is given.
  ``decode_in_batches`` gives it the whole array, its batch size the
  slots. The queue is decoded in order of source length, each chunk of it
  encoded at its own width (``plan_queue``), and handed back in its own
  order. Jitted once per (queue shape, slots, chunk widths)."""

  in_flight = True

  def __init__(self, model, *, full: bool = False, **kw):
    self.full = full
    self._beam = strategies.is_beam(kw.get("strategy"))
    self._jitted = {}
    self._fn = functools.partial(decode_queue, model, **kw)

  def with_slots(self, slots: int, widths: tuple = ()):
    """The jitted ``(params, src_NS, src_mask_NS, key, count, unsort_N)``
    decoding with ``slots`` rows, the queue's chunks encoded at ``widths``;
    each output row i is queue row ``unsort_N[i]``'s (None: row i's)."""
    if (slots, widths) not in self._jitted:
      def in_flight_decode(params, src_NS, src_mask_NS=None, key=None,
                           count=None, unsort_N=None):
        del key  # greedy and beam search draw nothing
        out = self._fn(params, src_NS, src_mask_NS, count, slots=slots,
                       widths=widths)
        if unsort_N is not None:
          n = src_NS.shape[0]
          out = jax.tree.map(
              lambda x: x[unsort_N] if x.ndim and x.shape[0] == n else x, out)
        if self.full:
          return out
        return out.tokens_QNT[:, 0] if self._beam else out.tokens_NT
      self._jitted[(slots, widths)] = jax.jit(in_flight_decode)
    return self._jitted[(slots, widths)]

  def planned(self, src_NS, src_mask_NS=None, *, slots: int, count=None):
    """-> (the jitted decoding of this queue, its arguments: params and
    key go first and fourth), ordered by ``plan_queue``."""
    n = src_NS.shape[0]
    plan = plan_queue(src_mask_NS, n if count is None else int(count))
    if plan is None:
      return self.with_slots(slots), (src_NS, src_mask_NS, count, None)
    order_N, widths = plan
    return self.with_slots(slots, widths), (
        np.asarray(src_NS)[order_N], np.asarray(src_mask_NS)[order_N], count,
        np.argsort(order_N).astype(np.int32))

  def __call__(self, params, src_NS, src_mask_NS=None, key=None, *,
               slots: Optional[int] = None, count=None):
    fn, (src, mask, count, unsort) = self.planned(
        src_NS, src_mask_NS, slots=slots or src_NS.shape[0], count=count)
    return fn(params, src, mask, key, count, unsort)


def make_decoder(model, strategy=strategies.Greedy(), *, max_len: int,
                 start_id: int, stop_id: Optional[int] = None,
                 pad_id: int = 0, full: bool = False,
                 in_flight: bool = False, **options):
  """Jitted ``decode(params, src_BS, src_mask_BS=None, key=None)`` ->
  tokens (B, max_len) (the best beam's); with ``full``, ``decode``'s whole
  result. ``options``: ``decode``'s (feedback, return_attention, score,
  early_stop). ``in_flight`` (greedy or beam search, fed tokens, no
  attention weights): a ``QueueDecoder``, the same tokens."""
  if in_flight:
    inflight_lib.check_in_flight(model, strategy,
                                 options.get("feedback", "tokens"))
    if options.get("return_attention"):
      raise ValueError("in-flight batching returns no attention weights")
    return QueueDecoder(model, full=full, max_len=max_len,
                        start_id=start_id, stop_id=stop_id, pad_id=pad_id,
                        score=options.get("score", False), strategy=strategy)
  check_decoder(model, strategy, options.get("feedback", "tokens"),
                options.get("return_attention", False))
  fn = functools.partial(decode, model, strategy=strategy, max_len=max_len,
                         start_id=start_id, stop_id=stop_id, pad_id=pad_id,
                         **options)

  def run(params, src_BS, src_mask_BS=None, key=None):
    out = fn(params, src_BS, src_mask_BS, key)
    if full:
      return out
    return out.tokens_BNT[:, 0] if strategies.is_beam(strategy) else (
        out.tokens_BT)

  return jax.jit(run)


# The most sentences one queue holds: all are encoded up front, so a huge
# set is decoded as queues of this many (rounded to the slots).
MAX_QUEUE = 8192


def queue_shape(n: int, batch_size: int) -> int:
  """The rows of the (first) queue of ``n`` sentences as
  ``decode_in_batches`` gives a ``QueueDecoder``: a multiple of
  ``batch_size``, so sets of similar sizes share a compiled program, of at
  most about ``MAX_QUEUE``."""
  rows = -(-max(n, 1) // batch_size) * batch_size
  return min(rows, max(MAX_QUEUE // batch_size, 1) * batch_size)


def pad_queue(src, src_mask, batch_size: int) -> tuple:
  """``src`` and ``src_mask`` (NumPy, or None) padded with copies of their
  last row to a multiple of ``batch_size`` rows: encoded, never
  decoded."""
  short = -src.shape[0] % batch_size
  pad = lambda x: x if x is None or not short else np.concatenate(
      [x, np.repeat(x[-1:], short, 0)])
  return pad(np.asarray(src)), pad(
      None if src_mask is None else np.asarray(src_mask))


def queue_programs(decoder: QueueDecoder, src, batch_size: int, src_mask):
  """-> [(jitted decoding, its arguments but params and key, sentences)]:
  the queues ``decode_in_batches`` cuts ``src`` into, ``batch_size``
  slots each."""
  size = queue_shape(src.shape[0], batch_size)
  queues = []
  for start in range(0, max(src.shape[0], 1), size):
    chunk = src[start:start + size]
    mask = None if src_mask is None else src_mask[start:start + size]
    padded, mask = pad_queue(chunk, mask, batch_size)
    fn, args = decoder.planned(padded, mask, slots=batch_size,
                               count=np.int32(len(chunk)))
    queues.append((fn, args, len(chunk)))
  return queues


def _decode_queue(decoder: QueueDecoder, params, src, batch_size: int,
                  src_mask):
  outputs = [(fn(params, src_NS, mask_NS, None, *rest), n) for fn,
             (src_NS, mask_NS, *rest), n in queue_programs(
                 decoder, src, batch_size, src_mask)]
  # Fetched after every queue is dispatched.
  return np.concatenate([np.asarray(out)[:n] for out, n in outputs])


def decode_in_batches(decode_fn, params, src, batch_size: int,
                      src_mask=None, key: Optional[Array] = None):
  """Runs a jitted decoder over a large array in fixed-size batches; batch
  i draws with ``fold_in(key, i)``. The last batch is padded to
  ``batch_size`` so the decoder compiles once. A ``QueueDecoder`` takes
  the whole array at once, ``batch_size`` its slots. Returns host (NumPy)
  tokens."""
  if getattr(decode_fn, "in_flight", False):
    return _decode_queue(decode_fn, params, src, batch_size, src_mask)
  n = src.shape[0]
  outputs = []
  for i, start in enumerate(range(0, n, batch_size)):
    chunk = src[start:start + batch_size]
    mask = None if src_mask is None else src_mask[start:start + batch_size]
    short = batch_size - chunk.shape[0]
    if short:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, 0)])
      if mask is not None:
        mask = np.concatenate([mask, np.repeat(mask[-1:], short, 0)])
    batch_key = None if key is None else jax.random.fold_in(key, i)
    outputs.append((decode_fn(params, chunk, mask, batch_key),
                    batch_size - short))
  # Fetched after every batch is dispatched: the host prepares the next
  # batch while the device decodes.
  return np.concatenate([np.asarray(out)[:n] for out, n in outputs])
