"""Pure train steps, the multi-step scan and the fit loop."""

import jax
import numpy as np
import pytest

from seqjax import train as train_lib
from seqjax.data import reverse
from seqjax.models import ModelSettings, Seq2Seq


def _setup(n=256, optimizer="adam", lr=None):
  data = reverse.generate(np.random.default_rng(0), n, 4, 2, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=16))
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(
      model, params, train_lib.make_optimizer(optimizer, lr))
  return model, state, data, train_lib.make_seq2seq_loss(model)


@pytest.mark.parametrize("optimizer", train_lib.OPTIMIZERS)
def test_train_step_lowers_loss_on_a_fixed_batch(optimizer):
  lr = {"adam": 0.05, "rmsprop": 0.05, "sgd": 3.0}[optimizer]
  _, state, data, loss_fn = _setup(64, optimizer, lr=lr)
  batch = {k: v[:32] for k, v in data.items()}
  step = train_lib.jit_train_step(loss_fn)
  first = None
  with train_lib.count_compiles(step) as compiles:
    for _ in range(60):
      state, m = step(state, batch)
      first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.7 * first
  assert int(state.step) == 60
  assert compiles.count == 1


def test_train_step_is_pure():
  _, state, data, loss_fn = _setup()
  batch = {k: v[:32] for k, v in data.items()}
  step = jax.jit(train_lib.make_train_step(loss_fn))  # no donation here
  s1, m1 = step(state, batch)
  s2, m2 = step(state, batch)
  assert float(m1["loss"]) == float(m2["loss"])
  jax.tree.map(np.testing.assert_array_equal, s1.params, s2.params)


def test_multi_step_equals_single_steps_and_skips_invalid():
  _, state, data, loss_fn = _setup()
  single = jax.jit(train_lib.make_train_step(loss_fn))
  multi = train_lib.make_multi_step(loss_fn)
  idx = np.arange(4 * 32, dtype=np.int32).reshape(4, 32)
  s_ref = state
  for k in range(3):
    s_ref, _ = single(s_ref, {n: v[idx[k]] for n, v in data.items()})
  valid = np.array([True, True, True, False])
  s_multi, _, _, metrics = multi(jax.tree.map(np.array, state), (), data,
                                 idx, valid, np.zeros(4, bool),
                                 np.zeros((), bool))
  assert int(s_multi.step) == 3
  assert float(metrics["loss"][3]) == 0.0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               s_ref.params, s_multi.params)


def test_fit_compiles_once_and_is_deterministic():
  cfg = train_lib.FitConfig(batch_size=16, epochs=2, steps_per_call=6,
                            log_every_steps=5)
  results = []
  for _ in range(2):
    _, state, data, loss_fn = _setup(200)  # 12 steps an epoch: odd chunks
    state, stats = train_lib.fit(state, data, loss_fn, cfg)
    assert stats.compiles == 1
    assert stats.steps_run == 24 and int(state.step) == 24
    results.append(state.params)
  jax.tree.map(np.testing.assert_array_equal, *results)


def test_fit_resumed_midway_equals_uninterrupted():
  cfg = train_lib.FitConfig(batch_size=16, epochs=2, steps_per_call=4)
  _, state, data, loss_fn = _setup(200)
  full, _ = train_lib.fit(jax.tree.map(np.array, state), data, loss_fn, cfg)
  half_cfg = train_lib.FitConfig(batch_size=16, epochs=1, steps_per_call=4)
  half, _ = train_lib.fit(state, data, loss_fn, half_cfg)
  resumed, stats = train_lib.fit(half, data, loss_fn, cfg)
  assert stats.steps_run == 12
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               full.params, resumed.params)


def test_fit_rejects_batch_larger_than_data():
  _, state, data, loss_fn = _setup(10)
  with pytest.raises(ValueError, match="batch_size"):
    train_lib.fit(state, data, loss_fn, train_lib.FitConfig(batch_size=32))


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="optimizer"):
    train_lib.make_optimizer("adagrad")


def test_checkpoint_every_secs_follows_the_clock(tmp_path):
  """A fake clock 10 s further on after each call: with a 25 s interval a
  save follows every third call (and each epoch end), counted from the last
  save."""
  import functools
  from seqjax.checkpoint import Checkpointer
  _, state, data, loss_fn = _setup(192)         # 12 steps an epoch
  multi = train_lib.make_multi_step(loss_fn)
  now = [0.0]

  @functools.wraps(multi)
  def ticking(*args):
    now[0] += 10.0
    return multi(*args)
  ckpt = Checkpointer(str(tmp_path), {}, max_to_keep=None)
  cfg = train_lib.FitConfig(batch_size=16, epochs=2, steps_per_call=2,
                            log_every_steps=0, checkpoint_every_secs=25.0)
  train_lib.fit(state, data, loss_fn, cfg, checkpointer=ckpt,
                multi_step=ticking, clock=lambda: now[0])
  # Calls end at 10, 20, ... s and steps 2, 4, ...: saves at 30 s (step 6),
  # the epoch end (step 12, 60 s), 90 s (step 18) and the end (step 24).
  assert ckpt.all_steps() == [6, 12, 18, 24]


def test_count_compiles_counts_each_new_shape_once():
  def doubled(x):
    return x * 2

  def plus_one(x):
    return x + 1
  # Counted by name: another function's compiles are not f's.
  f, g = jax.jit(doubled), jax.jit(plus_one)
  with train_lib.count_compiles(f) as of_f, train_lib.count_compiles() as all_:
    for n in (3, 3, 4, 3, 5):
      f(np.ones(n, np.float32))
    g(np.ones(3, np.float32))
  assert of_f.count == 3 and train_lib.compiles_of(f) >= 3
  assert all_.count >= 4
  with train_lib.count_compiles(f) as again:
    f(np.ones(4, np.float32))                  # cached: no compile
  assert again.count == 0
