"""The autoregressive decoding loop, and the one place a sequence's tokens
after its stop token become padding.

``token_loop`` runs a whole batch in one compiled ``lax.while_loop`` of at
most ``max_len`` steps: each step runs the decoder, a strategy picks the
tokens (``seqjax.decoding.strategies``), and the decoder is fed either those
tokens or its softmax (the free-running model). The loop ends once every
sequence has emitted the stop token (the steps left would be padding); the
stop token itself is emitted. Step t draws with ``fold_in(key, t)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array


class Decoded(NamedTuple):
  """A batch's decoding."""

  tokens_BT: Array                     # int32; pad_id after the stop token
  steps: Array                         # int32: decoder steps run
  weights_BTS: Optional[Array] = None  # attention weights; zeros after stop
  log_probs_B: Optional[Array] = None  # the model's log P of the tokens


def after_stop(tokens_BT: Array, stop_id: Optional[int]) -> Array:
  """Whether each step comes after its sequence's first stop token."""
  if stop_id is None:
    return jnp.zeros(tokens_BT.shape, bool)
  stop_BT = (tokens_BT == stop_id).astype(jnp.int32)
  return jnp.cumsum(stop_BT, axis=1) - stop_BT > 0


def pad_after_stop(tokens_BT: Array, stop_id: Optional[int],
                   pad_id: int) -> Array:
  """The tokens with every step after the first stop token ``pad_id``."""
  return jnp.where(after_stop(tokens_BT, stop_id), pad_id, tokens_BT)


def select_each_step(select: Callable, logits_BTV: Array, key, *,
                     stop_id: Optional[int], pad_id: int) -> Decoded:
  """The tokens of a model that predicts every step at once."""
  batch, steps, vocab = logits_BTV.shape
  tokens_BT = select(logits_BTV.reshape(-1, vocab), key).reshape(batch, steps)
  return Decoded(pad_after_stop(tokens_BT, stop_id, pad_id),
                 jnp.asarray(steps, jnp.int32))


class _Loop(NamedTuple):
  t: Array
  state: Any
  feed: Array              # the next input: tokens (B,) or a softmax (B, V)
  done_B: Array
  tokens_TB: Array
  weights_TBS: Optional[Array]
  logp_B: Optional[Array]


def _body(step: Callable, select: Callable, key, loop: _Loop, *,
          stop_id: Optional[int], feed_softmax: bool) -> _Loop:
  logits_BV, state = step(loop.feed, loop.state)
  step_key = None if key is None else jax.random.fold_in(key, loop.t)
  token_B = select(logits_BV, step_key)
  weights_TBS = logp_B = None
  if loop.weights_TBS is not None:
    weights_TBS = loop.weights_TBS.at[loop.t].set(state.weights_BS)
  if loop.logp_B is not None:
    logp_BV = jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)
    chosen_B = jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]
    logp_B = loop.logp_B + jnp.where(loop.done_B, 0.0, chosen_B)
  done_B = loop.done_B if stop_id is None else loop.done_B | (
      token_B == stop_id)
  feed = jax.nn.softmax(logits_BV, axis=-1) if feed_softmax else token_B
  return _Loop(loop.t + 1, state, feed, done_B,
               loop.tokens_TB.at[loop.t].set(token_B), weights_TBS, logp_B)


def token_loop(step: Callable, state, first_feed: Array, select: Callable,
               key, *, max_len: int, stop_id: Optional[int], pad_id: int,
               early_stop: bool = True, src_len: Optional[int] = None,
               score: bool = False) -> Decoded:
  """Decodes from the encoder's ``state``: ``step(feed, state) -> (logits_BV,
  state)``; ``first_feed`` the start tokens (B,) or their one-hot rows (B,
  V) (then the softmax is fed back). With ``src_len``, records the attention
  weights; with ``score``, each sequence's log-probability."""
  batch = first_feed.shape[0]
  loop = _Loop(
      t=jnp.zeros((), jnp.int32), state=state, feed=first_feed,
      done_B=jnp.zeros((batch,), bool),
      tokens_TB=jnp.full((max_len, batch), pad_id, jnp.int32),
      weights_TBS=(None if src_len is None else
                   jnp.zeros((max_len, batch, src_len), jnp.float32)),
      logp_B=jnp.zeros((batch,), jnp.float32) if score else None)

  def running(loop):
    more = loop.t < max_len
    if early_stop and stop_id is not None:
      more = more & ~jnp.all(loop.done_B)
    return more

  body = lambda loop: _body(step, select, key, loop, stop_id=stop_id,
                            feed_softmax=first_feed.ndim == 2)
  loop = jax.lax.while_loop(running, body, loop)
  tokens_BT = loop.tokens_TB.T
  weights_BTS = None
  if loop.weights_TBS is not None:
    weights_BTS = jnp.where(after_stop(tokens_BT, stop_id)[..., None], 0.0,
                            jnp.swapaxes(loop.weights_TBS, 0, 1))
  return Decoded(pad_after_stop(tokens_BT, stop_id, pad_id), loop.t,
                 weights_BTS, loop.logp_B)
