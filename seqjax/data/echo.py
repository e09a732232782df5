"""The echo task: random integer sequences framed as supervised samples.

As in the tutorial "How to Learn to Echo Random Integers with LSTMs": each
sequence is ``length`` (25) fresh random integers in 0..n_values-1 (0..99),
one-hot over n_values classes in Keras (here int32 ids: the layer gathers the
kernel row a one-hot input would select).

A sequence X(0..L-1) gives one sample (row) per time t = start..L-1:

* input: the ``window`` observations ending at t, X(t-window+1) .. X(t)
  (``whole_sequence``: X(0) .. X(t) padded at the front to L steps);
* target: X(t - lag); with ``sequence_output``, one target per input step j,
  the sample's own input ``lag`` steps earlier, x[j - lag].

Values before X(0) are missing. Rows that have them are either dropped
(``start`` past them, as the tutorial does) or kept: then missing input steps
hold ``PAD_ID`` and are False in ``x_mask`` (the recurrent layer's mask keeps
the carry unchanged on them, so the placeholder id is never seen), and
missing targets are False in ``y_mask`` (no loss, no accuracy). The masks
are only present when something is missing.

The tutorial's framings (``for_mode``), on a sequence 1..10:

* ``current`` (window 1, lag 0): rows ``1 -> 1`` .. ``10 -> 10``;
* ``lag_one_step`` (window 1, lag 1, its ``X = encoded[1:]``,
  ``y = encoded[:-1]``): ``2 -> 1``, ``3 -> 2``, ..;
* ``lag_window`` (window 5, lag 1): its table ``1 2 3 4 5 -> 4``, ..,
  ``6 7 8 9 10 -> 9`` lists every row with a full window (``Framing`` with
  the default ``start``); its code (``values[5:]``) drops one row more, the
  first full one, leaving 20 rows of a 25-value sequence, i.e. 4 batches of
  5 -- the mode follows the code (``start=window``), which the printed
  20-row output of the tutorial confirms.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

PAD_ID = 0  # placeholder id of a missing value; always masked, never read
MODES = ("current", "lag_one_step", "lag_window")


def generate(rng: np.random.Generator, n_sequences: int, length: int = 25,
             n_values: int = 100) -> np.ndarray:
  """-> (n_sequences, length) int32 random integers in 0..n_values-1."""
  return rng.integers(0, n_values, size=(n_sequences, length), dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class Framing:
  """How a sequence becomes rows of (input, target); see the module doc."""

  window: int
  lag: int
  start: Optional[int] = None   # None: the first row with a full window
  whole_sequence: bool = False
  sequence_output: bool = False

  def first_row(self) -> int:
    return max(self.window - 1, self.lag) if self.start is None else self.start

  def timesteps(self, length: int) -> int:
    return length if self.whole_sequence else self.window

  def rows_per_sequence(self, length: int) -> int:
    return length - self.first_row()

  def __call__(self, sequences) -> dict[str, np.ndarray]:
    """(N, L) or (L,) ids -> {"x": (N*R, T), "y": (N*R,) or (N*R, T)
    [, "x_mask", "y_mask"]}, rows of each sequence consecutive, in time order.
    """
    seqs = np.asarray(sequences)
    if seqs.ndim == 1:
      seqs = seqs[None]
    length = seqs.shape[1]
    steps = self.timesteps(length)
    t_R = np.arange(self.first_row(), length)
    if t_R.size == 0:
      raise ValueError(f"no rows: first row {self.first_row()} of a "
                       f"{length}-long sequence")
    # Position in the sequence of every input step of every row.
    pos_RT = t_R[:, None] - steps + 1 + np.arange(steps)[None, :]
    x_mask_RT = pos_RT >= 0
    x = np.where(x_mask_RT, seqs[:, np.maximum(pos_RT, 0)], PAD_ID)
    if self.sequence_output:
      src_RT = pos_RT - self.lag
      y_mask = (np.arange(steps)[None, :] >= self.lag) & (src_RT >= 0)
      y = np.where(y_mask, seqs[:, np.maximum(src_RT, 0)], PAD_ID)
    else:
      src_R = t_R - self.lag
      y_mask = src_R >= 0
      y = np.where(y_mask, seqs[:, np.maximum(src_R, 0)], PAD_ID)
    n = seqs.shape[0]
    out = {"x": x.reshape(-1, steps).astype(np.int32),
           "y": y.reshape((-1,) + y.shape[2:]).astype(np.int32)}
    if not x_mask_RT.all():
      out["x_mask"] = np.broadcast_to(x_mask_RT, (n,) + x_mask_RT.shape
                                      ).reshape(-1, steps).copy()
    if not y_mask.all():
      out["y_mask"] = np.broadcast_to(y_mask, (n,) + y_mask.shape).reshape(
          (-1,) + y_mask.shape[1:]).copy()
    return out


def for_mode(mode: str, *, window: int = 5, lag: Optional[int] = None,
             mask_missing: bool = False, whole_sequence: bool = False,
             sequence_output: bool = False) -> Framing:
  """The framing of an echo mode (the tutorial's, plus its extensions).

  ``mask_missing`` keeps the rows the tutorial drops (one per time step,
  missing values masked); ``whole_sequence`` gives each row X(0..t) as
  context instead of the last ``window`` values (same rows).
  """
  if mode == "current":
    return Framing(window=1, lag=0 if lag is None else lag, start=0,
                   sequence_output=sequence_output)
  lag = 1 if lag is None else lag
  if mode == "lag_one_step":
    return Framing(window=1, lag=lag, start=0 if mask_missing else lag,
                   sequence_output=sequence_output)
  if mode == "lag_window":
    return Framing(window=window, lag=lag, start=0 if mask_missing else window,
                   whole_sequence=whole_sequence,
                   sequence_output=sequence_output)
  raise ValueError(f"unknown echo mode {mode!r}; expected one of {MODES}")
