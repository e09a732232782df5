"""Greedy decoding's argmax (a max and a min, faster on XLA:CPU) is argmax."""

import jax.numpy as jnp
import numpy as np

from seqjax import decoding


def test_argmax_matches_numpy_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 51)).astype(np.float32)
  logits[:8] = np.round(logits[:8])  # many ties: the first maximum wins
  logits[8, :] = 3.0                 # all tied
  logits[9, -1] = 100.0              # maximum in the last column
  got = np.asarray(decoding.argmax(jnp.asarray(logits)))
  np.testing.assert_array_equal(got, logits.argmax(-1))
  assert got.dtype == np.int32
