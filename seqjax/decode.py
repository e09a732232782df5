"""Inference: the tutorial's inference encoder / decoder and greedy decoding.

``greedy_decode`` replaces the tutorial's ``predict_sequence`` Python loop: a
whole batch is decoded by one compiled loop of at most a fixed number of
steps (it ends early once every sequence has emitted the optional stop
token). After the stop token a sequence emits padding (id ``pad_id``).
``make_token_predictor`` gives the same interface for either model, so a
task's evaluation does not care which one it trained.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from seqjax import beam as beam_lib
from seqjax.models import Seq2Seq

Array = jax.Array


def make_inference_fns(model: Seq2Seq):
  """The tutorial's split as two jitted functions usable on their own.

  Returns ``(encode, decode_step)`` with
  ``encode(params, src_BS[, src_mask_BS]) -> carry`` and
  ``decode_step(params, token_B, carry) -> (probabilities_BV, carry)``.
  """

  @jax.jit
  def encode(params, src_BS, src_mask_BS=None):
    return model.apply(params, src_BS, src_mask_BS,
                       method=Seq2Seq.encode_for_decoding)

  @jax.jit
  def decode_step(params, token_B, carry):
    logits_BV, carry = model.apply(params, token_B, carry,
                                   method=Seq2Seq.decode_step)
    return jax.nn.softmax(logits_BV, axis=-1), carry

  return encode, decode_step


def _argmax(logits_BV: Array) -> Array:
  """``jnp.argmax`` over the last axis (the first maximum) as a max and a
  min: XLA:CPU's fused (value, index) reduction is about 3x slower."""
  max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
  vocab = logits_BV.shape[-1]
  index_BV = jnp.arange(vocab, dtype=jnp.int32)
  first_B = jnp.min(jnp.where(logits_BV == max_B1, index_BV, vocab), axis=-1)
  return jnp.minimum(first_B, vocab - 1)  # all-NaN logits: stay in range


def greedy_decode(model: Seq2Seq, params, src_BS: Array, *, max_len: int,
                  start_id: int, stop_id: Optional[int] = None, pad_id: int = 0,
                  src_mask_BS: Optional[Array] = None,
                  early_stop: bool = True, return_steps: bool = False,
                  return_attention: bool = False):
  """Greedy decoding of a batch -> tokens (B, max_len); with
  ``return_steps``, ``(tokens, steps)``: the decoder steps actually run
  (an int32 scalar; ``max_len`` without the early stop); with
  ``return_attention`` (a model that attends), the attention weights of
  every step (B, max_len, S) follow the tokens (zeros after the stop).

  The stop token itself is emitted; every step after it is ``pad_id``. With
  a ``stop_id`` (and ``early_stop``) the loop is a ``lax.while_loop`` that
  ends as soon as every sequence of the batch has stopped (the steps left
  are all padding, so the tokens are those of the full ``max_len`` scan);
  otherwise it is a ``lax.scan`` of ``max_len`` steps. Jit it (or call
  ``make_greedy_decoder``) to compile the whole loop once.
  """
  if return_attention and getattr(model, "attention", "none") == "none":
    raise ValueError("return_attention needs a model that attends "
                     "(attention='none' has no weights)")
  carry = model.apply(params, src_BS, src_mask_BS,
                      method=Seq2Seq.encode_for_decoding)
  batch, src_len = src_BS.shape

  def body(state, _):
    carry, token_B, done_B = state
    logits_BV, carry = model.apply(params, token_B, carry,
                                   method=Seq2Seq.decode_step)
    next_B = _argmax(logits_BV)
    out_B = jnp.where(done_B, pad_id, next_B)
    weights_BS = (jnp.where(done_B[:, None], 0.0, carry.weights_BS)
                  if return_attention else None)
    if stop_id is not None:
      done_B = done_B | (next_B == stop_id)
    return (carry, next_B, done_B), (out_B, weights_BS)

  def result(tokens_TB, weights_TBS, steps):
    out = (tokens_TB.T,)
    if return_steps:
      out += (steps,)
    if return_attention:
      out += (jnp.swapaxes(weights_TBS, 0, 1),)
    return out[0] if len(out) == 1 else out

  start_B = jnp.full((batch,), start_id, jnp.int32)
  done_B = jnp.zeros((batch,), bool)
  if stop_id is None or not early_stop:
    _, (tokens_TB, weights_TBS) = jax.lax.scan(
        body, (carry, start_B, done_B), None, length=max_len)
    return result(tokens_TB, weights_TBS, jnp.asarray(max_len, jnp.int32))

  def unfinished(loop):
    t, (_, _, done_B), _ = loop
    return (t < max_len) & ~jnp.all(done_B)

  def step(loop):
    t, state, (tokens_TB, weights_TBS) = loop
    state, (out_B, weights_BS) = body(state, None)
    if return_attention:
      weights_TBS = weights_TBS.at[t].set(weights_BS)
    return t + 1, state, (tokens_TB.at[t].set(out_B), weights_TBS)

  tokens_TB = jnp.full((max_len, batch), pad_id, jnp.int32)
  weights_TBS = (jnp.zeros((max_len, batch, src_len), jnp.float32)
                 if return_attention else None)
  steps, _, (tokens_TB, weights_TBS) = jax.lax.while_loop(
      unfinished, step, (jnp.zeros((), jnp.int32), (carry, start_B, done_B),
                         (tokens_TB, weights_TBS)))
  return result(tokens_TB, weights_TBS, steps)


def make_greedy_decoder(model: Seq2Seq, *, max_len: int, start_id: int,
                        stop_id: Optional[int] = None, pad_id: int = 0,
                        early_stop: bool = True,
                        return_attention: bool = False):
  """Jitted ``decode(params, src_BS, src_mask_BS=None) -> tokens (B, max_len)``.

  Also the way to decode one sequence (a batch of one): one compiled call,
  not a Python loop of ``make_inference_fns`` steps (2-3x faster on a CPU,
  benchmarks/RESULTS.md)."""
  fn = functools.partial(greedy_decode, model, max_len=max_len,
                         start_id=start_id, stop_id=stop_id, pad_id=pad_id,
                         early_stop=early_stop,
                         return_attention=return_attention)
  return jax.jit(lambda params, src, src_mask=None: fn(params, src,
                                                        src_mask_BS=src_mask))


def predict_tokens(model, params, src_BS: Array, *, max_len: int,
                   start_id: int = 0, stop_id: Optional[int] = None,
                   pad_id: int = 0, src_mask_BS: Optional[Array] = None
                   ) -> Array:
  """Predicted tokens (B, max_len) of either fixed-output-length model.

  A teacher-forced ``Seq2Seq`` is decoded greedily (``greedy_decode``); a
  model that is not teacher-forced (``RepeatVectorSeq2Seq``) predicts every
  step in one forward pass, so its tokens are the argmax of its logits. Steps
  after a ``stop_id`` are ``pad_id`` either way.
  """
  if getattr(model, "takes_decoder_input", True):
    return greedy_decode(model, params, src_BS, max_len=max_len,
                         start_id=start_id, stop_id=stop_id, pad_id=pad_id,
                         src_mask_BS=src_mask_BS)
  if max_len != model.out_len:
    raise ValueError(f"max_len={max_len} differs from the model's out_len="
                     f"{model.out_len}")
  logits_BTV = model.apply(params, src_BS, src_mask_BS)
  tokens_BT = jnp.argmax(logits_BTV, axis=-1).astype(jnp.int32)
  if stop_id is not None:
    is_stop_BT = tokens_BT == stop_id
    after_stop_BT = jnp.cumsum(is_stop_BT, axis=1) - is_stop_BT > 0
    tokens_BT = jnp.where(after_stop_BT, pad_id, tokens_BT)
  return tokens_BT


def free_running_decode(model: Seq2Seq, params, src_BS: Array, *,
                        max_len: int, start_id: int,
                        stop_id: Optional[int] = None, pad_id: int = 0,
                        src_mask_BS: Optional[Array] = None,
                        feedback: str = "softmax") -> Array:
  """Decoding with the free-running training model -> tokens (B, max_len).

  The decoder is fed back what it was trained with (``Seq2Seq.free_running``;
  the softmax by default) and emits the argmax of each step. With
  ``feedback="argmax"`` this is ``greedy_decode``. After the stop token
  (emitted) every step is ``pad_id``.
  """
  logits_BTV = model.apply(params, src_BS, max_len, start_id, src_mask_BS,
                           feedback, method=Seq2Seq.free_running)
  tokens_BT = jnp.argmax(logits_BTV, axis=-1).astype(jnp.int32)
  if stop_id is not None:
    stop_BT = (tokens_BT == stop_id).astype(jnp.int32)
    after_stop_BT = (jnp.cumsum(stop_BT, axis=1) - stop_BT) > 0
    tokens_BT = jnp.where(after_stop_BT, pad_id, tokens_BT)
  return tokens_BT


def make_token_predictor(model, *, max_len: int, start_id: int = 0,
                         stop_id: Optional[int] = None, pad_id: int = 0,
                         search: Optional["Search"] = None):
  """Jitted ``predict(params, src_BS, src_mask_BS=None) -> tokens (B, max_len)``
  for either model (see ``predict_tokens``); use it with ``decode_in_batches``.
  A beam ``search`` needs a model decoded step by step (ValueError
  otherwise)."""
  if search is not None and not search.greedy:
    if not getattr(model, "takes_decoder_input", True):
      raise ValueError(f"beam search needs a model decoded step by step; "
                       f"{type(model).__name__} predicts all steps at once")
    return make_search_decoder(model, search, max_len=max_len,
                               start_id=start_id, stop_id=stop_id,
                               pad_id=pad_id)
  fn = functools.partial(predict_tokens, model, max_len=max_len,
                         start_id=start_id, stop_id=stop_id, pad_id=pad_id)
  return jax.jit(lambda params, src, src_mask=None: fn(params, src,
                                                        src_mask_BS=src_mask))


def make_free_running_decoder(model: Seq2Seq, *, max_len: int, start_id: int,
                              stop_id: Optional[int] = None, pad_id: int = 0,
                              feedback: str = "softmax"):
  """Jitted ``decode(params, src_BS, src_mask_BS=None) -> tokens (B, max_len)``."""
  fn = functools.partial(free_running_decode, model, max_len=max_len,
                         start_id=start_id, stop_id=stop_id, pad_id=pad_id,
                         feedback=feedback)
  return jax.jit(lambda params, src, src_mask=None: fn(params, src,
                                                        src_mask_BS=src_mask))


def decode_in_batches(decode_fn, params, src: Array, batch_size: int,
                      src_mask: Optional[Array] = None):
  """Runs a jitted decoder over a large array in fixed-size batches.

  The last batch is padded to ``batch_size`` so the decoder compiles once.
  Returns host (NumPy) tokens.
  """
  import numpy as np
  n = src.shape[0]
  outputs = []
  for start in range(0, n, batch_size):
    chunk = src[start:start + batch_size]
    mask = None if src_mask is None else src_mask[start:start + batch_size]
    short = batch_size - chunk.shape[0]
    if short:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, 0)])
      if mask is not None:
        mask = np.concatenate([mask, np.repeat(mask[-1:], short, 0)])
    out = decode_fn(params, chunk, mask) if mask is not None else decode_fn(
        params, chunk)
    outputs.append((out, batch_size - short))
  # Fetched after every batch is dispatched: the host prepares the next
  # batch while the device decodes.
  return np.concatenate([np.asarray(out)[:n] for out, n in outputs])


@dataclasses.dataclass(frozen=True)
class Search:
  """How a task decodes: greedy (``beam_size=1``; no length penalty) or
  beam search (``seqjax.beam``) with a GNMT ``length_penalty``."""

  beam_size: int = 1
  length_penalty: float = 0.0

  def __post_init__(self):
    beam_lib.check(self.beam_size, 1, self.length_penalty)

  @property
  def greedy(self) -> bool:
    return self.beam_size == 1

  def describe(self) -> dict:
    """The settings as results.json records them."""
    if self.greedy:
      return {"name": "greedy"}
    return {"name": "beam", "beam_size": self.beam_size,
            "length_penalty": self.length_penalty}

  def __str__(self) -> str:
    return ("greedy" if self.greedy else
            f"beam {self.beam_size} (length penalty {self.length_penalty:g})")


def make_search_decoder(model: Seq2Seq, search: Search, *, max_len: int,
                        start_id: int, stop_id: Optional[int] = None,
                        pad_id: int = 0):
  """Jitted ``decode(params, src_BS, src_mask_BS=None) -> tokens (B,
  max_len)`` of ``search``: the greedy decoder, or the best beam."""
  kwargs = dict(max_len=max_len, start_id=start_id, stop_id=stop_id,
                pad_id=pad_id)
  if search.greedy:
    return make_greedy_decoder(model, **kwargs)
  return beam_lib.make_beam_decoder(model, beam_size=search.beam_size,
                                    length_penalty=search.length_penalty,
                                    **kwargs)
