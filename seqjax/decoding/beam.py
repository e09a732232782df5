"""Beam search: a whole batch in one compiled loop, for every ``Seq2Seq``.

Array letters: B sentences, K beams, C = 2K candidates, V target
vocabulary, J = min(2K, V) candidates a beam, T decoding steps
(``max_len``), N returned hypotheses.

Each sentence keeps K live hypotheses and K finished ones. A step runs the
decoder once on all B*K live hypotheses (beams live in the batch axis: the
state of beam k of sentence b is row b*K + k), adds each token's log
probability to its hypothesis' sum, and takes the 2K best continuations over
K x V (``lax.top_k``). Those of the K best that end in the stop token (or
reach ``max_len``) are finished: ranked with the finished ones by their
score, the best K kept (a stop ranked below K is dropped, as in fairseq: so
one beam is greedy decoding). The K best continuations that did not stop are
the new live hypotheses, and the decoder state is gathered by the beam
each came from (``seqjax.per_beam.map_per_beam``: the state's ``Shared``
parts, such as an attention memory that serves a sentence's K beams from
one row, are neither copied per beam nor gathered). 2K candidates always
leave K that did not stop (a beam has one stop token). A finished
hypothesis is never extended.

Score (GNMT, Wu et al. 2016): ``log P(y) / ((5 + |y|) / 6) ** alpha``, where
``log P(y)`` is the sum of the step log-probabilities and ``|y|`` counts the
emitted tokens, the stop token included; ``alpha = 0`` is the raw sum. A
hypothesis that reaches ``max_len`` without the stop token is finished there
(``|y| = max_len``), so every sentence gets N hypotheses, as greedy decoding
always gives one.

The loop is a ``lax.while_loop`` that ends once no live hypothesis of any
sentence can beat its sentence's N-th finished one: the sum of log
probabilities only falls as a hypothesis grows, and the penalty (alpha >= 0)
is largest at ``max_len``, so ``live / penalty(max_len)`` bounds every score a
live hypothesis can reach. The N hypotheses returned are those of running
all ``max_len`` steps (with N = 1 the search often ends before greedy
decoding of the same batch does). With K = 1 and alpha = 0 this is greedy
decoding, token for token.

A live slot without a hypothesis (at the first step only beam 0 is real; a
tiny vocabulary may have fewer sequences than K) has log probability -inf:
it is never preferred to a real one, and a returned hypothesis with score
-inf is such an empty slot.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from seqjax.decoding.strategies import BeamSearch
from seqjax.models import Seq2Seq
from seqjax.per_beam import map_per_beam

Array = jax.Array
NEG_INF = -jnp.inf


class Beams(NamedTuple):
  """The N best hypotheses of each sentence, best first."""

  tokens_BNT: Array     # int32; pad_id after the stop token
  scores_BN: Array      # float32: log_probs / penalty(lengths)
  log_probs_BN: Array   # float32: the sum of the step log-probabilities
  lengths_BN: Array     # int32: tokens emitted, the stop token included
  steps: Array          # int32: decoder steps run (<= max_len)


class _Search(NamedTuple):
  t: Array                  # the step about to run
  state: object             # decoder state, leaves (B*K, ...)
  last_BK: Array            # the token each live hypothesis emitted last
  alive_tokens_BKT: Array
  alive_logp_BK: Array      # sorted, best first
  fin_tokens_BKT: Array
  fin_score_BK: Array       # sorted, best first
  fin_logp_BK: Array
  fin_len_BK: Array


def penalty(length, alpha: float):
  """GNMT's length penalty ``((5 + length) / 6) ** alpha``."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _repeat_beams(state, k: int):
  """Every per-beam leaf (B, ...) -> (B*K, ...), row b*K + j a copy of row
  b; ``Shared`` parts stay (B, ...)."""
  return map_per_beam(lambda x: jnp.repeat(x, k, axis=0), state)


def _gather_beams(state, rows: Array):
  """The per-beam leaves' rows ``rows`` (B*K,); a beam comes from a beam of
  its own sentence, so ``Shared`` parts need no gather."""
  return map_per_beam(lambda x: jnp.take(x, rows, axis=0), state)


def _take(x_BK, index_BJ):
  """Row-wise ``x[b, index[b, j]]`` for x (B, K) or (B, K, T)."""
  if x_BK.ndim == 3:
    index_BJ = index_BJ[..., None]
  return jnp.take_along_axis(x_BK, index_BJ, axis=1)


def _write_step(tokens_BCT: Array, t: Array, token_BC: Array) -> Array:
  """``tokens[:, :, t] = token``, t a scalar or each sentence's (B,)."""
  if jnp.ndim(t) == 0:
    return tokens_BCT.at[:, :, t].set(token_BC)
  at_BCT = jnp.arange(tokens_BCT.shape[-1]) == t[:, None, None]
  return jnp.where(at_BCT, token_BC[..., None], tokens_BCT)


def _step(model, params, s: _Search, *, k: int, max_len: int,
          stop_id: Optional[int], alpha: float) -> _Search:
  batch = s.alive_logp_BK.shape[0]
  logits_XV, state = model.apply(params, s.last_BK.reshape(-1), s.state,
                                 method="decode_step")
  vocab = logits_XV.shape[-1]
  logits_BKV = logits_XV.astype(jnp.float32).reshape(batch, k, vocab)
  # The 2K best of a sentence are among the 2K best of each of its beams:
  # a top-k per beam, then one over K x 2K, is 2x faster than one over
  # K x V, and only the chosen log-probabilities are formed.
  per_beam = min(2 * k, vocab)
  top_BKJ, token_BKJ = jax.lax.top_k(logits_BKV, per_beam)
  logp_BKJ = top_BKJ - jax.nn.logsumexp(logits_BKV, axis=-1, keepdims=True)
  cand_BX = (s.alive_logp_BK[..., None] + logp_BKJ).reshape(batch, -1)
  logp_BC, index_BC = jax.lax.top_k(cand_BX, 2 * k)
  origin_BC = index_BC // per_beam
  token_BC = _take(token_BKJ.reshape(batch, -1), index_BC)
  tokens_BCT = _write_step(_take(s.alive_tokens_BKT, origin_BC), s.t,
                           token_BC)
  # t is one step for all sentences, or each sentence's own (B,).
  t_B1 = jnp.reshape(s.t, (-1, 1))
  ends_BC = jnp.broadcast_to(t_B1 == max_len - 1, token_BC.shape)
  if stop_id is not None:
    ends_BC = ends_BC | (token_BC == stop_id)
  # Only the K best candidates may finish (as in fairseq): K = 1 is greedy.
  finishes_BC = ends_BC & (jnp.arange(2 * k) < k)

  alive_logp_BK, pick_BK = jax.lax.top_k(
      jnp.where(ends_BC, NEG_INF, logp_BC), k)
  rows_BK = jnp.arange(batch)[:, None] * k + _take(origin_BC, pick_BK)
  length = s.t + 1
  new_score_BC = jnp.where(finishes_BC, logp_BC / penalty(t_B1 + 1, alpha),
                           NEG_INF)
  fin_score_BK, fin_pick_BK = jax.lax.top_k(
      jnp.concatenate([s.fin_score_BK, new_score_BC], axis=1), k)
  merged = lambda old, new: _take(jnp.concatenate([old, new], axis=1),
                                  fin_pick_BK)
  return _Search(
      t=length, state=_gather_beams(state, rows_BK.reshape(-1)),
      last_BK=_take(token_BC, pick_BK),
      alive_tokens_BKT=_take(tokens_BCT, pick_BK),
      alive_logp_BK=alive_logp_BK,
      fin_tokens_BKT=merged(s.fin_tokens_BKT, tokens_BCT),
      fin_score_BK=fin_score_BK,
      fin_logp_BK=merged(s.fin_logp_BK, logp_BC),
      fin_len_BK=merged(s.fin_len_BK,
                        jnp.broadcast_to(t_B1 + 1, token_BC.shape)))


def _can_improve(s: _Search, max_len: int, alpha: float, n: int) -> Array:
  """Whether some sentence's best live hypothesis could still beat its
  N-th finished one (see the module docstring for the bound)."""
  best_B = s.alive_logp_BK[:, 0] / penalty(max_len, alpha)
  return jnp.any(best_B > s.fin_score_BK[:, n - 1])


def beam_search(model: Seq2Seq, params, src_BS: Array,
                src_mask_BS: Optional[Array], strategy: BeamSearch, *,
                max_len: int, start_id: int, stop_id: Optional[int] = None,
                pad_id: int = 0, early_stop: bool = True) -> Beams:
  """The ``strategy.n_best`` best hypotheses of every sentence of a batch
  (see the module docstring). ``early_stop=False`` runs all ``max_len``
  steps (the same result)."""
  if not getattr(model, "takes_decoder_input", True):
    raise ValueError(f"beam search needs a model decoded step by step; "
                     f"{type(model).__name__} predicts all steps at once")
  k, alpha = strategy.beam_size, float(strategy.length_penalty)
  batch = src_BS.shape[0]
  state = model.apply(params, src_BS, src_mask_BS,
                      method="encode_for_decoding")
  # Beam 0 is the one real hypothesis at the start: the others are
  # copies, kept out of the first step's candidates.
  first_BK = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)
  s = _Search(
      t=jnp.zeros((), jnp.int32), state=_repeat_beams(state, k),
      last_BK=jnp.full((batch, k), start_id, jnp.int32),
      alive_tokens_BKT=jnp.full((batch, k, max_len), pad_id, jnp.int32),
      alive_logp_BK=jnp.broadcast_to(first_BK, (batch, k)),
      fin_tokens_BKT=jnp.full((batch, k, max_len), pad_id, jnp.int32),
      fin_score_BK=jnp.full((batch, k), NEG_INF),
      fin_logp_BK=jnp.full((batch, k), NEG_INF),
      fin_len_BK=jnp.zeros((batch, k), jnp.int32))
  step = functools.partial(_step, model, params, k=k, max_len=max_len,
                           stop_id=stop_id, alpha=alpha)

  def running(s):
    more = s.t < max_len
    if early_stop and stop_id is not None:
      more = more & _can_improve(s, max_len, alpha, strategy.n_best)
    return more

  s = jax.lax.while_loop(running, step, s)
  n = strategy.n_best
  return Beams(tokens_BNT=s.fin_tokens_BKT[:, :n],
               scores_BN=s.fin_score_BK[:, :n],
               log_probs_BN=s.fin_logp_BK[:, :n],
               lengths_BN=s.fin_len_BK[:, :n], steps=s.t)
