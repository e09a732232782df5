"""Token-selection strategies: how a decoding step picks each sequence's next
token from the step's logits.

A strategy is a small frozen object with ``select(logits_BV, key) ->
tokens_B`` (int32). Greedy ignores the key; sampling draws with it. Beam
search keeps K hypotheses a sentence and so a loop state of its own
(``seqjax.decoding.beam``): ``BeamSearch`` holds its settings only.
Every strategy ``describe()``s itself as results.json records it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from seqjax.errors import ParameterError

Array = jax.Array


def argmax(logits_BV: Array) -> Array:
  """``jnp.argmax`` over the last axis (the first maximum) as a max and a
  min: XLA:CPU's fused (value, index) reduction is about 3x slower."""
  max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
  vocab = logits_BV.shape[-1]
  index_BV = jnp.arange(vocab, dtype=jnp.int32)
  first_B = jnp.min(jnp.where(logits_BV == max_B1, index_BV, vocab), axis=-1)
  return jnp.minimum(first_B, vocab - 1)  # all-NaN logits: stay in range


@dataclasses.dataclass(frozen=True)
class Greedy:
  """The most likely token of every step."""

  def select(self, logits_BV: Array, key=None) -> Array:
    del key
    return argmax(logits_BV)

  def describe(self) -> dict:
    return {"name": "greedy"}

  def __str__(self) -> str:
    return "greedy"


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
  """Raises ParameterError for settings sampling cannot draw with."""
  if not temperature > 0 or temperature == float("inf"):
    raise ParameterError("sampling_temperature", temperature, "must be a "
                         "positive finite number (0: greedy, no sampling)")
  if top_k < 0:
    raise ParameterError("top_k", top_k, "must be >= 0 (0: every token)")
  if not 0 < top_p <= 1:
    raise ParameterError("top_p", top_p, "must be in (0, 1] (1: every "
                         "token)")


@dataclasses.dataclass(frozen=True)
class Sampling:
  """A draw from the softmax of logits / ``temperature``, truncated to the
  ``top_k`` most likely tokens (0: all), then to the smallest most likely
  set of mass >= ``top_p`` (ties: the lower id first), renormalised.
  ``top_k=1`` is greedy."""

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    check_sampling(self.temperature, self.top_k, self.top_p)

  def select(self, logits_BV: Array, key: Array) -> Array:
    logits_BV = logits_BV.astype(jnp.float32) / self.temperature
    vocab = logits_BV.shape[-1]
    k = self.top_k if 0 < self.top_k < vocab else vocab
    if k == vocab and self.top_p == 1:
      return jax.random.categorical(key, logits_BV).astype(jnp.int32)
    # The draw is among the k most likely, sorted (lax.top_k: ties by id).
    top_BK, token_BK = jax.lax.top_k(logits_BV, k)
    if self.top_p < 1:
      probs_BK = jax.nn.softmax(top_BK, axis=-1)
      before_BK = jnp.cumsum(probs_BK, axis=-1) - probs_BK
      top_BK = jnp.where(before_BK < self.top_p, top_BK, -jnp.inf)
    pick_B = jax.random.categorical(key, top_BK)
    return jnp.take_along_axis(token_BK, pick_B[:, None], axis=-1)[:, 0]

  def describe(self) -> dict:
    return {"name": "sampling", "temperature": self.temperature,
            "top_k": self.top_k, "top_p": self.top_p}

  def __str__(self) -> str:
    return (f"sampling (temperature {self.temperature:g}, top-k "
            f"{self.top_k or 'all'}, top-p {self.top_p:g})")


def check_beam(beam_size: int, n_best: int = 1, length_penalty: float = 0.0,
               vocab: Optional[int] = None) -> None:
  """Raises ParameterError for settings beam search cannot run with;
  ``vocab``: also refuses more beams than target symbols."""
  if beam_size < 1:
    raise ParameterError("beam_size", beam_size, "must be at least 1")
  if vocab is not None and beam_size > vocab:
    raise ParameterError("beam_size", beam_size, f"exceeds the {vocab} "
                         "target symbols: beams beyond them stay empty")
  if not 1 <= n_best <= beam_size:
    raise ParameterError("n_best", n_best, f"must be between 1 and the beam "
                         f"size ({beam_size}): the search keeps {beam_size} "
                         "finished hypotheses")
  if not length_penalty >= 0:  # also refuses NaN
    raise ParameterError("length_penalty", length_penalty, "must be >= 0 "
                         "(0: raw log-probability)")


@dataclasses.dataclass(frozen=True)
class BeamSearch:
  """Beam search (``seqjax.decoding.beam``) with ``beam_size`` beams, a GNMT
  ``length_penalty`` and the ``n_best`` hypotheses it returns."""

  beam_size: int = 2
  length_penalty: float = 0.0
  n_best: int = 1

  def __post_init__(self):
    check_beam(self.beam_size, self.n_best, self.length_penalty)

  def describe(self) -> dict:
    return {"name": "beam", "beam_size": self.beam_size,
            "length_penalty": self.length_penalty}

  def __str__(self) -> str:
    return (f"beam {self.beam_size} (length penalty "
            f"{self.length_penalty:g})")


def search(beam_size: int = 1, length_penalty: float = 0.0):
  """Greedy for one beam (no length penalty), else ``BeamSearch``."""
  if beam_size == 1:
    return Greedy()
  return BeamSearch(beam_size, length_penalty)


def is_beam(strategy) -> bool:
  return isinstance(strategy, BeamSearch)
