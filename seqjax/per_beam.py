"""Which leaves of a decoder state belong to one beam.

Beam search keeps a sentence's K hypotheses in the batch axis: every
per-beam leaf of the decoder state is repeated K times and gathered by beam
index after each step. A part of the state that all of a sentence's beams
read unchanged (the attention memory) is wrapped in ``Shared``: it keeps one
row per sentence and is never copied or gathered. Search code maps over the
state with ``map_per_beam`` and names no field, so a new decoder state needs
no change to the search.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Shared(NamedTuple):
  """A subtree of the decoder state shared by all beams of a sentence."""

  value: Any


def _is_shared(x) -> bool:
  return isinstance(x, Shared)


def map_per_beam(fn: Callable, state):
  """``fn`` applied to every per-beam leaf of ``state``; ``Shared`` parts
  are returned as they are."""
  return jax.tree.map(lambda x: x if _is_shared(x) else fn(x), state,
                      is_leaf=_is_shared)
