"""One-hot helpers, for the edges only (printing tutorial shapes, references)."""

from __future__ import annotations

import numpy as np


def one_hot_encode(ids: np.ndarray, cardinality: int) -> np.ndarray:
  """int ids (...,) -> float32 one-hot (..., cardinality)."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= cardinality):
    raise ValueError(f"ids must lie in [0, {cardinality}); got "
                     f"[{ids.min()}, {ids.max()}]")
  return np.eye(cardinality, dtype=np.float32)[ids]


def one_hot_decode(encoded: np.ndarray) -> np.ndarray:
  """one-hot or probabilities (..., V) -> ids (...,) by argmax."""
  return np.asarray(encoded).argmax(axis=-1)
