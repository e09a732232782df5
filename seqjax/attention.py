"""Attention over the encoder's outputs (the memory), masked by source length.

Shapes: B batch, S source steps, T target steps, M memory features (the
encoder's output width: units, or twice that when bidirectional), H decoder
units, A the score's inner width.

* ``bahdanau`` (additive, Bahdanau et al. 2015): ``score(q, m) = v . tanh(W_q q
  + W_k m)``; its query is the decoder's previous state, and the context is
  an input of the decoder step.
* ``luong`` (multiplicative, Luong et al. 2015): ``dot`` scores ``q . m``
  (M must equal H) and ``general`` scores ``q . (W_a m)``; its query is the
  decoder's new state, and the context is combined with it into the
  attentional state ``tanh(W_c [c; h])`` that is read out (and, with input
  feeding, fed to the next step).

``keys`` projects the memory once per sentence; each step is then one
batched dot product against them. Padded source positions get exactly zero
weight. A step's queries may be a multiple of the memory's rows (beam
search: the K beams of sentence b are query rows b*K .. b*K + K - 1): each
memory row then serves its K queries, and is never copied K times.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

KINDS = ("none", "bahdanau", "luong")
SCORES = ("dot", "general")  # Luong's; Bahdanau's is additive


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


def make_memory(arrays: dict, values_BSM: Array, mask_BS: Array) -> Memory:
  """The memory with its keys: the projection done once per sentence."""
  kernel = arrays.get("key_kernel")
  keys_BSA = (values_BSM if kernel is None
              else values_BSM @ kernel.astype(values_BSM.dtype))
  return Memory(values_BSM, keys_BSA, mask_BS.astype(bool))


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


def scores(arrays: dict, kind: str, query_BXH: Array, memory: Memory
           ) -> Array:
  """Scores (B, S) for a query (B, H), or (B, T, S) for queries (B, T, H);
  (B*K, S) for K queries a memory row."""
  k = _beams_of(query_BXH, memory)
  if k > 1:
    rows = memory.keys_BSA.shape[0]
    scores_BKS = scores(arrays, kind, query_BXH.reshape(rows, k, -1), memory)
    return scores_BKS.reshape(rows * k, -1)
  keys_BSA = memory.keys_BSA
  if kind == "luong":
    if query_BXH.ndim == 2:
      return jnp.einsum("bh,bsh->bs", query_BXH, keys_BSA)
    return jnp.einsum("bth,bsh->bts", query_BXH, keys_BSA)
  q_BXA = query_BXH @ arrays["query_kernel"].astype(query_BXH.dtype)
  v_A = arrays["v"].astype(query_BXH.dtype)
  if query_BXH.ndim == 2:
    return jnp.tanh(q_BXA[:, None, :] + keys_BSA) @ v_A
  return jnp.tanh(q_BXA[:, :, None, :] + keys_BSA[:, None]) @ v_A


def attend(arrays: dict, kind: str, query_BXH: Array, memory: Memory
           ) -> tuple[Array, Array]:
  """-> (context (B, M) or (B, T, M), weights (B, S) or (B, T, S)); (B*K,
  M) and (B*K, S) for K queries a memory row."""
  k = _beams_of(query_BXH, memory)
  if k > 1:
    rows = memory.keys_BSA.shape[0]
    context_BKM, weights_BKS = attend(arrays, kind,
                                      query_BXH.reshape(rows, k, -1), memory)
    return (context_BKM.reshape(rows * k, -1),
            weights_BKS.reshape(rows * k, -1))
  weights_BXS = masked_softmax(scores(arrays, kind, query_BXH, memory),
                               memory.mask_BS)
  if weights_BXS.ndim == 2:
    context = jnp.einsum("bs,bsm->bm", weights_BXS, memory.values_BSM)
  else:
    context = jnp.einsum("bts,bsm->btm", weights_BXS, memory.values_BSM)
  return context, weights_BXS


class Attention(nn.Module):
  """One attention mechanism's parameters (module docstring).

  ``arrays()`` hands them out as a dict for the pure functions above, so a
  decoder's scan body calls no module.

  Attributes:
    kind: "bahdanau" or "luong".
    units: the query's width (the decoder's units, H).
    memory_features: the memory's width M.
    score: Luong's "dot" or "general" (ignored for Bahdanau).
  """

  kind: str
  units: int
  memory_features: int
  score: str = "general"

  def setup(self):
    check(self.kind, self.score, self.units, self.memory_features)
    init = nn.initializers.xavier_uniform()
    if self.kind == "bahdanau":
      self.key_kernel = self.param("key_kernel", init,
                                   (self.memory_features, self.units))
      self.query_kernel = self.param("query_kernel", init,
                                     (self.units, self.units))
      self.v = self.param("v", nn.initializers.normal(self.units ** -0.5),
                          (self.units,))
    elif self.score == "general":
      self.key_kernel = self.param("key_kernel", init,
                                   (self.memory_features, self.units))

  def arrays(self) -> dict:
    if self.kind == "bahdanau":
      return {"key_kernel": self.key_kernel, "query_kernel": self.query_kernel,
              "v": self.v}
    return {"key_kernel": self.key_kernel} if self.score == "general" else {}


def check(kind: str, score: str, units: int, memory_features: int) -> None:
  """Raises ValueError for an attention that cannot be built."""
  if kind not in KINDS[1:]:
    raise ValueError(f"unknown attention {kind!r}; expected one of "
                     f"{KINDS[1:]}")
  if kind == "luong" and score not in SCORES:
    raise ValueError(f"unknown Luong score {score!r}; expected one of "
                     f"{SCORES}")
  if kind == "luong" and score == "dot" and memory_features != units:
    raise ValueError(
        f"a dot score needs memory features ({memory_features}) equal to "
        f"the decoder units ({units}); use the general score")
