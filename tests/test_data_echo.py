"""The echo task's framing against the tutorial's printed X / y tables."""

import numpy as np
import pytest

from seqjax.data import echo

# The tutorial's printed check of the lag_one_step data (X(t), X(t-1)) for
# one random sequence: its `print(a, b)` output, all 24 rows.
TUTORIAL_LAG_ONE_STEP = [
    (78, 65), (7, 78), (16, 7), (11, 16), (23, 11), (99, 23), (39, 99),
    (53, 39), (82, 53), (6, 82), (18, 6), (17, 18), (49, 17), (4, 49),
    (34, 4), (77, 34), (46, 77), (22, 46), (40, 22), (76, 40), (85, 76),
    (87, 85), (17, 87), (75, 17)]

# The tutorial's printed check of the lag_window data (5 inputs, then y): its
# 20 rows for one random sequence.
TUTORIAL_LAG_WINDOW = [
    (57, 96, 99, 77, 44, 77), (96, 99, 77, 44, 45, 44),
    (99, 77, 44, 45, 28, 45), (77, 44, 45, 28, 70, 28),
    (44, 45, 28, 70, 73, 70), (45, 28, 70, 73, 74, 73),
    (28, 70, 73, 74, 73, 74), (70, 73, 74, 73, 64, 73),
    (73, 74, 73, 64, 29, 64), (74, 73, 64, 29, 15, 29),
    (73, 64, 29, 15, 94, 15), (64, 29, 15, 94, 98, 94),
    (29, 15, 94, 98, 89, 98), (15, 94, 98, 89, 52, 89),
    (94, 98, 89, 52, 96, 52), (98, 89, 52, 96, 46, 96),
    (89, 52, 96, 46, 46, 46), (52, 96, 46, 46, 85, 46),
    (96, 46, 46, 85, 49, 85), (46, 46, 85, 49, 59, 49)]

N = None  # a missing value (the tutorial's NaN)
# The tutorial's table for [1..10], window 5, lag 1 (its first row, all NaN,
# stands before the sequence; its last row, after it, has no input).
TUTORIAL_TABLE_1_TO_10 = [
    ((N, N, N, N, 1), N), ((N, N, N, 1, 2), 1), ((N, N, 1, 2, 3), 2),
    ((N, 1, 2, 3, 4), 3), ((1, 2, 3, 4, 5), 4), ((2, 3, 4, 5, 6), 5),
    ((3, 4, 5, 6, 7), 6), ((4, 5, 6, 7, 8), 7), ((5, 6, 7, 8, 9), 8),
    ((6, 7, 8, 9, 10), 9)]


def _rows(data):
  """Framed data -> [(inputs, target)] with None where masked."""
  x, y = data["x"], data["y"]
  xm = data.get("x_mask", np.ones(x.shape, bool))
  ym = data.get("y_mask", np.ones(y.shape, bool))
  return [(tuple(int(v) if m else None for v, m in zip(xr, xmr)),
           (int(yr) if ymr else None) if y.ndim == 1 else
           tuple(int(v) if m else None for v, m in zip(yr, ymr)))
          for xr, xmr, yr, ymr in zip(x, xm, y, ym)]


def test_window_table_for_1_to_10():
  """Rows with a full window: `1 2 3 4 5 -> 4` .. `6 7 8 9 10 -> 9`."""
  rows = _rows(echo.Framing(window=5, lag=1)(np.arange(1, 11)))
  assert rows == [r for r in TUTORIAL_TABLE_1_TO_10 if N not in r[0]]
  assert rows[0] == ((1, 2, 3, 4, 5), 4) and len(rows) == 6


def test_mask_missing_keeps_the_tutorials_dropped_rows_masked():
  data = echo.for_mode("lag_window", mask_missing=True)(np.arange(1, 11))
  assert _rows(data) == TUTORIAL_TABLE_1_TO_10
  assert data["x_mask"].sum() == 50 - 10 and data["y_mask"].sum() == 9


def test_lag_window_mode_matches_the_tutorials_printed_rows():
  # X(0) is not in the printout (the code's values[5:] skips its window);
  # X(1..20) open the 20 rows and the last row ends with X(21..24).
  sequence = [13] + [r[0] for r in TUTORIAL_LAG_WINDOW] + list(
      TUTORIAL_LAG_WINDOW[-1][1:5])
  data = echo.for_mode("lag_window")(np.array(sequence))
  assert len(sequence) == 25 and "x_mask" not in data
  assert _rows(data) == [(r[:5], r[5]) for r in TUTORIAL_LAG_WINDOW]
  assert echo.for_mode("lag_window").rows_per_sequence(25) == 20


def test_lag_one_step_mode_matches_the_tutorials_rows():
  # [1, 2, 3, 4]: the table's `1 -> NaN` and `NaN -> 4` rows are dropped.
  assert _rows(echo.for_mode("lag_one_step")(np.arange(1, 5))) == [
      ((2,), 1), ((3,), 2), ((4,), 3)]
  sequence = [TUTORIAL_LAG_ONE_STEP[0][1]] + [a for a, _ in
                                              TUTORIAL_LAG_ONE_STEP]
  rows = _rows(echo.for_mode("lag_one_step")(np.array(sequence)))
  assert rows == [((a,), b) for a, b in TUTORIAL_LAG_ONE_STEP]
  # --mask_missing keeps the first row, its target missing.
  assert _rows(echo.for_mode("lag_one_step", mask_missing=True)(
      np.arange(1, 5)))[0] == ((1,), None)


def test_current_mode_is_one_value_per_sample():
  data = echo.for_mode("current")(np.array([[5, 9, 1], [0, 3, 3]]))
  np.testing.assert_array_equal(data["x"], [[5], [9], [1], [0], [3], [3]])
  np.testing.assert_array_equal(data["y"], [5, 9, 1, 0, 3, 3])


def test_lags_and_whole_sequence():
  seq = np.arange(1, 8)
  assert _rows(echo.for_mode("lag_window", window=3, lag=2)(seq)) == [
      ((2, 3, 4), 2), ((3, 4, 5), 3), ((4, 5, 6), 4), ((5, 6, 7), 5)]
  # Whole history, padded at the front to the sequence length; same rows.
  assert _rows(echo.for_mode("lag_window", window=5, whole_sequence=True)(
      seq)) == [((N, 1, 2, 3, 4, 5, 6), 5), ((1, 2, 3, 4, 5, 6, 7), 6)]


def test_sequence_output_echoes_the_input_lag_steps_later():
  rows = _rows(echo.for_mode("lag_window", window=4, lag=2, mask_missing=True,
                             sequence_output=True)(np.arange(1, 6)))
  assert rows == [
      ((N, N, N, 1), (N, N, N, N)), ((N, N, 1, 2), (N, N, N, N)),
      ((N, 1, 2, 3), (N, N, N, 1)), ((1, 2, 3, 4), (N, N, 1, 2)),
      ((2, 3, 4, 5), (N, N, 2, 3))]


def test_many_sequences_are_consecutive_blocks_and_generation():
  rng = np.random.default_rng(0)
  seqs = echo.generate(rng, 3, 25, 100)
  assert seqs.shape == (3, 25) and seqs.dtype == np.int32
  assert seqs.min() >= 0 and seqs.max() <= 99
  np.testing.assert_array_equal(
      seqs, echo.generate(np.random.default_rng(0), 3, 25, 100))
  framing = echo.for_mode("lag_window")
  data = framing(seqs)
  for i in range(3):
    one = framing(seqs[i])
    np.testing.assert_array_equal(data["x"][20 * i:20 * (i + 1)], one["x"])
    np.testing.assert_array_equal(data["y"][20 * i:20 * (i + 1)], one["y"])


def test_unknown_mode():
  with pytest.raises(ValueError, match="unknown echo mode"):
    echo.for_mode("lag_table")
