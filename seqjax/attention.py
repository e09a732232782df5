"""Attention over the encoder's outputs (the memory), masked by source length.

Shapes: B batch, S source steps, T target steps, M memory features (the
encoder's output width: units, or twice that when bidirectional), H decoder
units, A the score's inner width.

Two kinds of attention (how the decoder uses it, ``seqjax.decoder``):

* ``bahdanau`` (Bahdanau et al. 2015): the query is the decoder's previous
  state, the context an input of the decoder step, and the step reads out
  from ``tanh(W_c [c; h])`` of that context and its new state. Its score is
  always the paper's ``additive`` one.
* ``luong`` (Luong et al. 2015): the query is the decoder's new state, and
  the context is combined with it into the attentional state
  ``tanh(W_c [c; h])`` that is read out (and, with input feeding, fed to the
  next step). Its score is any entry of ``SCORES``.

``SCORES`` is the registry of scores: each entry makes its own parameters
(``init``), projects the memory once per sentence (``keys``) and scores a
step's queries against those keys (``score``). A new score is one entry.
Padded source positions get exactly zero weight. A step's queries may be a
multiple of the memory's rows (beam search: the K beams of sentence b are
query rows b*K .. b*K + K - 1): each memory row then serves its K queries,
and is never copied K times.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.per_beam import Shared

Array = jax.Array

KINDS = ("none", "bahdanau", "luong")
BAHDANAU_SCORE = "additive"

_glorot = nn.initializers.xavier_uniform()


class Score(NamedTuple):
  """One attention score.

  ``init(param, H, M)`` makes the score's parameters with ``param`` (a
  module's ``self.param``) and returns them as a dict; ``keys(params,
  values_BSM)`` is the memory's projection, computed once per sentence;
  ``score(params, query_BXH, keys_BSA)`` scores queries (B, H) or (B, T, H)
  -> (B, S) or (B, T, S). ``same_width``: the memory's width must equal the
  query's.
  """
  init: Callable
  score: Callable
  keys: Callable = lambda params, values_BSM: values_BSM
  same_width: bool = False


def _dot(query_BXH: Array, keys_BSH: Array) -> Array:
  if query_BXH.ndim == 2:
    return jnp.einsum("bh,bsh->bs", query_BXH, keys_BSH)
  return jnp.einsum("bth,bsh->bts", query_BXH, keys_BSH)


def _additive(q_BXA: Array, keys_BSA: Array, v_A: Array) -> Array:
  """``v . tanh(q + k)`` of every query against every key."""
  v_A = v_A.astype(q_BXA.dtype)
  if q_BXA.ndim == 2:
    return jnp.tanh(q_BXA[:, None, :] + keys_BSA) @ v_A
  return jnp.tanh(q_BXA[:, :, None, :] + keys_BSA[:, None]) @ v_A


def _project(values: Array, kernel: Array) -> Array:
  return values @ kernel.astype(values.dtype)


def _v(param, units: int) -> Array:
  return param("v", nn.initializers.normal(units ** -0.5), (units,))


SCORES: dict[str, Score] = {
    # Luong: h_t . h_s
    "dot": Score(init=lambda param, h, m: {},
                 score=lambda p, q, k: _dot(q, k), same_width=True),
    # Luong: h_t . (W_a h_s), the keys W_a h_s
    "general": Score(
        init=lambda param, h, m: {
            "key_kernel": param("key_kernel", _glorot, (m, h))},
        keys=lambda p, values: _project(values, p["key_kernel"]),
        score=lambda p, q, k: _dot(q, k)),
    # Vaswani et al. 2017: h_t . h_s / sqrt(d)
    "scaled_dot": Score(
        init=lambda param, h, m: {},
        score=lambda p, q, k: _dot(q, k) / math.sqrt(q.shape[-1]),
        same_width=True),
    # Bahdanau: v . tanh(W_q h + W_k h_s), the keys W_k h_s
    "additive": Score(
        init=lambda param, h, m: {
            "key_kernel": param("key_kernel", _glorot, (m, h)),
            "query_kernel": param("query_kernel", _glorot, (h, h)),
            "v": _v(param, h)},
        keys=lambda p, values: _project(values, p["key_kernel"]),
        score=lambda p, q, k: _additive(_project(q, p["query_kernel"]), k,
                                        p["v"])),
    # Luong: v . tanh(W [h_t; h_s]); W's rows split into the query's and
    # the keys' parts, so the keys are projected once per sentence.
    "concat": Score(
        init=lambda param, h, m: {
            "kernel": param("kernel", _glorot, (h + m, h)), "v": _v(param, h)},
        keys=lambda p, values: _project(
            values, p["kernel"][p["kernel"].shape[0] - values.shape[-1]:]),
        score=lambda p, q, k: _additive(
            _project(q, p["kernel"][:q.shape[-1]]), k, p["v"])),
}


def score_of(kind: str, score: str) -> str:
  """The score an attention of ``kind`` uses: Bahdanau's is additive;
  Luong's is the ``score`` chosen."""
  return BAHDANAU_SCORE if kind == "bahdanau" else score


def _entry(score: str, params: dict) -> Score:
  # The kinds' names stand for their scores, as older callers pass them.
  if score == "luong":
    score = "general" if "key_kernel" in params else "dot"
  return SCORES[BAHDANAU_SCORE if score == "bahdanau" else score]


class Memory(NamedTuple):
  """What every decoder step attends to: computed once per sentence."""
  values_BSM: Array   # the encoder outputs
  keys_BSA: Array     # their projection for the score
  mask_BS: Array      # True on real source positions


def masked_softmax(scores_BXS: Array, mask_BS: Array) -> Array:
  """Softmax over the last axis where ``mask`` is True; zero elsewhere.

  ``scores`` is (B, S) or (B, T, S); the mask (B, S) broadcasts over T."""
  if scores_BXS.ndim == 3:
    mask_BS = mask_BS[:, None, :]
  scores_BXS = jnp.where(mask_BS, scores_BXS, -jnp.inf)
  max_BX1 = jnp.max(scores_BXS, axis=-1, keepdims=True)
  # A row with no real position (never a real source) gives zeros, not NaN.
  max_BX1 = jnp.where(jnp.isfinite(max_BX1), max_BX1, 0.0)
  e_BXS = jnp.where(mask_BS, jnp.exp(scores_BXS - max_BX1), 0.0)
  return e_BXS / jnp.maximum(e_BXS.sum(axis=-1, keepdims=True), 1e-30)


def make_memory(params: dict, values_BSM: Array, mask_BS: Array,
                score: Optional[str] = None) -> Memory:
  """The memory with the score's keys: the projection done once per
  sentence. ``score`` None: the keys are ``values @ params["key_kernel"]``,
  or the values where there is no such kernel."""
  if score is None:
    score = "general" if "key_kernel" in params else "dot"
  keys_BSA = SCORES[score].keys(params, values_BSM)
  return Memory(values_BSM, keys_BSA, mask_BS.astype(bool))


def _unshared(memory) -> Memory:
  return memory.value if isinstance(memory, Shared) else memory


def _beams_of(query_XH: Array, memory: Memory) -> int:
  """How many consecutive rows of a step's queries (X, H) share a memory
  row: 1, or the beams of a sentence."""
  rows = memory.keys_BSA.shape[0]
  if query_XH.ndim != 2 or query_XH.shape[0] == rows:
    return 1
  if query_XH.shape[0] % rows:
    raise ValueError(f"{query_XH.shape[0]} query rows for a memory of "
                     f"{rows}: not a multiple")
  return query_XH.shape[0] // rows


def scores(params: dict, score: str, query_BXH: Array, memory) -> Array:
  """Scores (B, S) for a query (B, H), or (B, T, S) for queries (B, T, H);
  (B*K, S) for K queries a memory row. ``score`` names an entry of
  ``SCORES`` (or a kind: "bahdanau" for additive, "luong" for general or,
  without a key kernel, dot)."""
  memory = _unshared(memory)
  k = _beams_of(query_BXH, memory)
  if k > 1:
    rows = memory.keys_BSA.shape[0]
    scores_BKS = scores(params, score, query_BXH.reshape(rows, k, -1), memory)
    return scores_BKS.reshape(rows * k, -1)
  return _entry(score, params).score(params, query_BXH, memory.keys_BSA)


def attend(params: dict, score: str, query_BXH: Array, memory
           ) -> tuple[Array, Array]:
  """-> (context (B, M) or (B, T, M), weights (B, S) or (B, T, S)); (B*K,
  M) and (B*K, S) for K queries a memory row. ``score`` as in ``scores``."""
  memory = _unshared(memory)
  k = _beams_of(query_BXH, memory)
  if k > 1:
    rows = memory.keys_BSA.shape[0]
    context_BKM, weights_BKS = attend(params, score,
                                      query_BXH.reshape(rows, k, -1), memory)
    return (context_BKM.reshape(rows * k, -1),
            weights_BKS.reshape(rows * k, -1))
  weights_BXS = masked_softmax(scores(params, score, query_BXH, memory),
                               memory.mask_BS)
  if weights_BXS.ndim == 2:
    context = jnp.einsum("bs,bsm->bm", weights_BXS, memory.values_BSM)
  else:
    context = jnp.einsum("bts,bsm->btm", weights_BXS, memory.values_BSM)
  return context, weights_BXS


class Attention(nn.Module):
  """One attention's score parameters (module docstring).

  ``arrays()`` hands them out as a dict for the pure functions above, so a
  decoder's scan body calls no module.

  Attributes:
    kind: "bahdanau" or "luong".
    units: the query's width (the decoder's units, H).
    memory_features: the memory's width M.
    score: Luong's score, a name in ``SCORES`` (Bahdanau's is additive).
  """

  kind: str
  units: int
  memory_features: int
  score: str = "general"

  def setup(self):
    check(self.kind, self.score, self.units, self.memory_features)
    self._arrays = SCORES[self.score_name()].init(
        self.param, self.units, self.memory_features)

  def score_name(self) -> str:
    return score_of(self.kind, self.score)

  def arrays(self) -> dict:
    return dict(self._arrays)


def check(kind: str, score: str, units: int, memory_features: int) -> None:
  """Raises ValueError for an attention that cannot be built."""
  if kind not in KINDS[1:]:
    raise ValueError(f"unknown attention {kind!r}; expected one of "
                     f"{KINDS[1:]}")
  name = score_of(kind, score)
  if name not in SCORES:
    raise ValueError(f"unknown Luong score {score!r}; expected one of "
                     f"{tuple(SCORES)}")
  if SCORES[name].same_width and memory_features != units:
    raise ValueError(
        f"a {name} score needs memory features ({memory_features}) equal "
        f"to the decoder units ({units}); use the general score")
