import os

import jax
import numpy as np
import pytest

from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer, CheckpointMismatchError
from seqjax.data import reverse
from seqjax.models import ModelSettings, Seq2Seq


def _state(units=16, seed=0):
  data = reverse.generate(np.random.default_rng(0), 64, 4, 2, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9,
                  settings=ModelSettings(units=units))
  params = model.init(jax.random.key(seed), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  return state, data, train_lib.make_seq2seq_loss(model)


def _tree_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_save_restore_round_trip_and_resume(tmp_path):
  state, data, loss_fn = _state()
  step = train_lib.jit_train_step(loss_fn)
  for i in range(3):
    state, _ = step(state, {k: v[i * 16:(i + 1) * 16] for k, v in data.items()})
  ckpt = Checkpointer(str(tmp_path), {"units": 16})
  ckpt.save(state)
  fresh, _, _ = _state(seed=5)  # different initial parameters
  restored = Checkpointer(str(tmp_path), {"units": 16}).restore(fresh)
  assert int(restored.step) == 3
  _tree_equal(restored.params, state.params)
  _tree_equal(restored.opt_state, state.opt_state)
  # Resuming continues the step count and the optimizer's own count.
  restored, _ = step(restored, {k: v[:16] for k, v in data.items()})
  assert int(restored.step) == 4
  assert int(restored.opt_state[0].count) == 4


def test_mismatched_model_is_refused_and_checkpoint_untouched(tmp_path):
  state, _, _ = _state(units=16)
  Checkpointer(str(tmp_path), {"units": 16}).save(state)
  before = sorted(os.walk(tmp_path))
  other, _, _ = _state(units=32)
  ckpt = Checkpointer(str(tmp_path), {"units": 32})
  with pytest.raises(CheckpointMismatchError, match="units: checkpoint 16, now 32"):
    ckpt.restore(other)
  # Same config but other shapes (a config that forgot a key) is refused too.
  with pytest.raises(CheckpointMismatchError, match="does not fit"):
    Checkpointer(str(tmp_path), {"units": 16}).restore(other)
  assert sorted(os.walk(tmp_path)) == before
  restored = Checkpointer(str(tmp_path), {"units": 16}).restore(_state()[0])
  _tree_equal(restored.params, state.params)


def test_no_checkpoint_returns_state_unchanged(tmp_path):
  state, _, _ = _state()
  ckpt = Checkpointer(str(tmp_path / "new"), {"units": 16})
  assert ckpt.latest_step() is None
  assert ckpt.restore(state) is state
