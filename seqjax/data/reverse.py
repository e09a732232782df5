"""The reverse task: source = random integers, target = the first k reversed.

As in the encoder-decoder tutorial: source values lie in 1..cardinality-1 (0 is
padding and the decoder's start token), the target is the first
``n_steps_out`` source values reversed, and the decoder input is the target
shifted right behind a 0: ``[0] + target[:-1]``.
"""

from __future__ import annotations

import numpy as np

START_ID = 0


def generate(rng: np.random.Generator, n_samples: int, n_steps_in: int = 6,
             n_steps_out: int = 3, cardinality: int = 51) -> dict[str, np.ndarray]:
  """-> {"src": (N, n_steps_in), "dec_in": (N, n_steps_out),
  "target": (N, n_steps_out)}, all int32."""
  if not 0 < n_steps_out <= n_steps_in:
    raise ValueError(f"need 0 < n_steps_out <= n_steps_in; got {n_steps_out}, "
                     f"{n_steps_in}")
  if cardinality < 3:
    raise ValueError(f"cardinality must be >= 3; got {cardinality}")
  src = rng.integers(1, cardinality, size=(n_samples, n_steps_in),
                     dtype=np.int32)
  target = src[:, :n_steps_out][:, ::-1].copy()
  dec_in = np.concatenate(
      [np.full((n_samples, 1), START_ID, np.int32), target[:, :-1]], axis=1)
  return {"src": src, "dec_in": dec_in, "target": target}
