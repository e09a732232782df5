import numpy as np
import pytest

from seqjax.data import encoding
from seqjax.data import reverse


def test_generator_invariants():
  d = reverse.generate(np.random.default_rng(0), 500, 6, 3, 51)
  assert d["src"].shape == (500, 6) and d["target"].shape == (500, 3)
  assert d["src"].dtype == np.int32
  assert d["src"].min() >= 1 and d["src"].max() <= 50  # no 0 in the source
  np.testing.assert_array_equal(d["target"], d["src"][:, 2::-1])
  np.testing.assert_array_equal(d["dec_in"][:, 0], 0)
  np.testing.assert_array_equal(d["dec_in"][:, 1:], d["target"][:, :-1])
  assert len(np.unique(d["src"])) == 50  # every value is drawn


def test_generator_is_seeded():
  a = reverse.generate(np.random.default_rng(7), 10)
  b = reverse.generate(np.random.default_rng(7), 10)
  c = reverse.generate(np.random.default_rng(8), 10)
  np.testing.assert_array_equal(a["src"], b["src"])
  assert not np.array_equal(a["src"], c["src"])


def test_generator_rejects_impossible_shapes():
  with pytest.raises(ValueError, match="n_steps_out"):
    reverse.generate(np.random.default_rng(0), 5, 3, 4)
  with pytest.raises(ValueError, match="cardinality"):
    reverse.generate(np.random.default_rng(0), 5, 3, 2, 2)


def test_one_hot_round_trip():
  ids = np.array([[0, 3, 50], [1, 2, 3]])
  oh = encoding.one_hot_encode(ids, 51)
  assert oh.shape == (2, 3, 51) and oh.sum() == 6
  np.testing.assert_array_equal(encoding.one_hot_decode(oh), ids)
  with pytest.raises(ValueError):
    encoding.one_hot_encode(np.array([51]), 51)
