"""Stateful training and prediction: the carry threaded through batches, its
resets, masked steps, and the per-step classifier, against NumPy references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import stateful
from seqjax import train as train_lib
from seqjax.models import RecurrentClassifier
from tests import reference

V, H = 7, 8  # vocabulary (one-hot width) and units


def _classifier(cell="lstm", every_step=True, seed=0):
  model = RecurrentClassifier(vocab=V, num_classes=V, units=H, cell=cell,
                              every_step=every_step)
  params = jax.jit(model.init)(jax.random.key(seed),
                               np.zeros((1, 3), np.int32))
  # Random biases, so a carry or bias mix-up cannot hide behind zeros.
  p = params["params"]["rnn"]
  p["bias"] = jax.random.normal(jax.random.key(seed + 1), p["bias"].shape)
  return model, params


def _numpy_rnn(cell, params, tokens_BT, carry=None, mask_BT=None):
  """Reference outputs (B, T, H) and final carry from explicit one-hots."""
  p = params["params"]["rnn"]
  x = reference.one_hot(tokens_BT, V)
  if cell == "lstm":
    h0, c0 = (None, None) if carry is None else carry
    out, h, c = reference.lstm_numpy(p, x, h0, c0, mask_BT)
    return out, (h, c)
  out, h = reference.gru_numpy(p, x, None if carry is None else carry[0],
                               mask_BT)
  return out, (h,)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_threading_the_carry_through_batches_equals_one_scan(cell):
  """Row i of batch k continues row i of batch k-1: per row index, the rows
  i, i+B, i+2B, .. of a stream form one sequence."""
  model, params = _classifier(cell)
  s, r, t, b = 2, 6, 3, 2                  # streams, rows, timesteps, batch
  x_SRT = np.random.default_rng(0).integers(0, V, (s, r, t)).astype(np.int32)

  def apply(params, batch, carry):
    return model.apply(params, batch, carry)
  batches = stateful.to_batches(x_SRT, b)
  logits_K, carry = jax.jit(
      lambda p, xs: stateful.scan_batches(apply, p, xs,
                                          model.initial_carry(s * b)))(
                                              params, batches)
  logits = stateful.from_batches(logits_K, s)          # (S, R, T, V)
  for si in range(s):
    for i in range(b):
      rows = x_SRT[si, i::b]                           # this row's batches
      joined = rows.reshape(1, -1)                     # one long sequence
      out, ref_carry = _numpy_rnn(cell, params, joined)
      ref_logits = reference.dense_numpy(params["params"]["readout"], out)
      np.testing.assert_allclose(logits[si, i::b].reshape(1, -1, V),
                                 ref_logits, atol=1e-5)
      for got, want in zip(carry, ref_carry):
        np.testing.assert_allclose(got[si * b + i], want[0], atol=1e-5)


def test_to_batches_layout_and_inverse():
  rows = np.arange(2 * 6).reshape(2, 6)        # 2 streams of 6 rows
  batches = stateful.to_batches(rows, 3)
  np.testing.assert_array_equal(
      batches, [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]])
  np.testing.assert_array_equal(stateful.from_batches(batches, 2), rows)
  with pytest.raises(ValueError, match="must divide"):
    stateful.to_batches(rows, 4)


def test_reset_restores_the_initial_carry():
  model, params = _classifier()
  x = np.random.default_rng(1).integers(0, V, (4, 3, 2)).astype(np.int32)
  init = tuple(np.random.default_rng(2).normal(size=(3, H)).astype(np.float32)
               for _ in range(2))

  def apply(params, batch, carry):
    return model.apply(params, batch, carry)
  out, _ = stateful.scan_batches(apply, params, x, init, reset_every=2)
  # Batches 0 and 2 start from `init`; batch 3 continues batch 2.
  for k in (0, 2):
    fresh, carry = model.apply(params, x[k], init)
    np.testing.assert_allclose(out[k], fresh, atol=1e-6)
  cont, _ = model.apply(params, x[3], carry)
  np.testing.assert_allclose(out[3], cont, atol=1e-6)
  # Without resets batch 2 continues batch 1 instead: different.
  no_reset, _ = stateful.scan_batches(apply, params, x, init)
  assert np.abs(np.asarray(no_reset[2] - out[2])).max() > 1e-3
  # And reset_carry itself picks per the flag.
  picked = stateful.reset_carry(True, init, tuple(np.zeros_like(c)
                                                  for c in init))
  np.testing.assert_array_equal(picked[0], init[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_masked_steps_change_nothing(cell):
  """Missing (masked) steps: whatever id they hold, the carry, the outputs and
  the loss are those of the real steps alone."""
  model, params = _classifier(cell, every_step=False)
  apply = jax.jit(model.apply)  # one compile per input structure
  rng = np.random.default_rng(3)
  real = rng.integers(0, V, (2, 3)).astype(np.int32)
  junk1 = rng.integers(0, V, (2, 2)).astype(np.int32)
  junk2 = (junk1 + 1) % V
  mask = np.array([[False, False, True, True, True]] * 2)
  a, ca = apply(params, np.concatenate([junk1, real], 1), None, mask)
  b, cb = apply(params, np.concatenate([junk2, real], 1), None, mask)
  c, cc = apply(params, real)
  np.testing.assert_allclose(a, c, atol=1e-6)
  np.testing.assert_allclose(b, c, atol=1e-6)
  for x, y in zip(ca, cc):
    np.testing.assert_allclose(x, y, atol=1e-6)
  # Same with the NumPy reference, masked steps at the end and a start carry.
  init = tuple(rng.normal(size=(2, H)) for _ in range(2 if cell == "lstm"
                                                       else 1))
  x = np.concatenate([real, junk1], 1)
  tail_mask = np.array([[True, True, True, False, False]] * 2)
  out, carry = apply(params, x, tuple(jnp.asarray(c, jnp.float32)
                                      for c in init), tail_mask)
  ref_out, ref_carry = _numpy_rnn(cell, params, x, init, tail_mask)
  np.testing.assert_allclose(
      out, reference.dense_numpy(params["params"]["readout"], ref_out[:, -1]),
      atol=1e-5)
  for got, want in zip(carry, ref_carry):
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Masked targets: no loss, no gradient, whatever their value.
  loss_fn = train_lib.make_classifier_loss(model)
  batch = {"x": real, "y": np.array([1, 2], np.int32),
           "y_mask": np.array([True, False])}
  other = {**batch, "y": np.array([1, 5], np.int32)}
  grad_fn = jax.jit(jax.value_and_grad(lambda p, d: loss_fn(p, d)[0]))
  la, ga = grad_fn(params, batch)
  lb, gb = grad_fn(params, other)
  assert float(la) == float(lb)
  jax.tree.map(np.testing.assert_array_equal, ga, gb)


@pytest.mark.parametrize("every_step", [False, True])
def test_classifier_matches_numpy_reference(every_step):
  model, params = _classifier(every_step=every_step)
  x = np.random.default_rng(4).integers(0, V, (3, 5)).astype(np.int32)
  logits, carry = model.apply(params, x)
  out, (h, c) = _numpy_rnn("lstm", params, x)
  want = reference.dense_numpy(params["params"]["readout"],
                               out if every_step else out[:, -1])
  np.testing.assert_allclose(logits, want, atol=1e-5)
  np.testing.assert_allclose(carry[1], c, atol=1e-5)
  assert logits.shape == ((3, 5, V) if every_step else (3, V))


@pytest.mark.parametrize("units,total", [(15, 8_560), (50, 35_300)])
def test_classifier_parameter_count_is_keras(units, total):
  # The echo tutorial's LSTM(units, input_shape=(.., 100)) + Dense(100):
  # 4 * units * (100 + units + 1) + (units + 1) * 100.
  model = RecurrentClassifier(vocab=100, num_classes=100, units=units)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          np.zeros((1, 1), np.int32))
  assert sum(a.size for a in jax.tree.leaves(params)) == total
  assert model.initial_carry(6)[0].shape == (6, units)


def _stateful_setup(lr, n_rows=24, t=2, seed=0):
  model, params = _classifier(every_step=False, seed=seed)
  rng = np.random.default_rng(seed)
  data = {"x": rng.integers(0, V, (n_rows, t)).astype(np.int32),
          "y": rng.integers(0, V, (n_rows,)).astype(np.int32)}
  state = train_lib.create_train_state(
      model, params, train_lib.make_optimizer("sgd", lr))
  return model, state, data, train_lib.make_classifier_loss(model,
                                                             stateful=True)


@pytest.mark.parametrize("reset_every", [0, 3])
def test_stateful_fit_threads_the_carry_and_resets_it(reset_every):
  """With a zero learning rate the parameters stay put, so fit's final carry
  must be the NumPy scan over the rows each batch row saw since its last
  reset."""
  b = 2
  model, state, data, loss_fn = _stateful_setup(lr=0.0)
  params = jax.tree.map(np.array, state.params)
  cfg = train_lib.FitConfig(batch_size=b, epochs=1, shuffle=False,
                            steps_per_call=5, log_every_steps=0)
  _, stats = train_lib.fit(state, data, loss_fn, cfg,
                           initial_carry=model.initial_carry(b),
                           reset_every=reset_every)
  steps = len(data["x"]) // b                          # 12
  first = 0 if not reset_every else (steps - 1) // reset_every * reset_every
  for i in range(b):
    rows = data["x"][first * b + i::b]                 # since the last reset
    _, (h, c) = _numpy_rnn("lstm", params, rows.reshape(1, -1))
    np.testing.assert_allclose(stats.final_carry[0][i], h[0], atol=1e-5)
    np.testing.assert_allclose(stats.final_carry[1][i], c[0], atol=1e-5)


def test_stateful_fit_equals_a_manual_loop_and_compiles_once():
  b, reset_every = 3, 2
  model, state, data, loss_fn = _stateful_setup(lr=0.5)
  step = jax.jit(train_lib.make_stateful_train_step(loss_fn))
  init = model.initial_carry(b)
  ref, carry = jax.tree.map(np.array, state), init
  for epoch in range(2):
    for k in range(len(data["x"]) // b):
      if k % reset_every == 0:
        carry = init
      batch = {n: v[k * b:(k + 1) * b] for n, v in data.items()}
      ref, carry, _ = step(ref, batch, carry)
  cfg = train_lib.FitConfig(batch_size=b, epochs=2, shuffle=False,
                            steps_per_call=3, log_every_steps=5)
  got, stats = train_lib.fit(state, data, loss_fn, cfg, initial_carry=init,
                             reset_every=reset_every)
  assert stats.compiles == 1 and int(got.step) == 16
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, atol=1e-5),
               ref.params, got.params)
  for a, c in zip(carry, stats.final_carry):
    np.testing.assert_allclose(a, c, atol=1e-5)
  # The stateful eval step gives the train step's loss and carry.
  metrics, ev_carry = train_lib.make_stateful_eval_step(loss_fn)(
      got.params, {n: v[:b] for n, v in data.items()}, init)
  loss, (_, want_carry) = loss_fn(got.params, {n: v[:b] for n, v in
                                               data.items()}, init)
  assert np.isclose(float(metrics["loss"]), float(loss))
  np.testing.assert_allclose(ev_carry[0], want_carry[0], atol=1e-6)


def test_stateful_shuffle_moves_whole_blocks_only():
  perm = train_lib.stateful_permutation(0, 3, 24, 6)
  assert sorted(perm.tolist()) == list(range(24))
  blocks = perm.reshape(4, 6)
  assert all((blk == blk[0] + np.arange(6)).all() and blk[0] % 6 == 0
             for blk in blocks)
  assert perm.tolist() != list(range(24))          # it does shuffle
  np.testing.assert_array_equal(perm, train_lib.stateful_permutation(0, 3, 24,
                                                                     6))
  np.testing.assert_array_equal(
      train_lib.stateful_permutation(0, 3, 24, 6, shuffle=False),
      np.arange(24))


def test_stateful_fit_rejects_partial_blocks():
  model, state, data, loss_fn = _stateful_setup(lr=0.1, n_rows=20)
  with pytest.raises(ValueError, match="whole blocks"):
    train_lib.fit(state, data, loss_fn, train_lib.FitConfig(batch_size=2),
                  initial_carry=model.initial_carry(2), reset_every=3)


def _bits(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _copy(tree):  # fit donates its state; keep the original usable
  return jax.tree.map(lambda x: jnp.asarray(np.array(x)), tree)


def test_stateful_resume_mid_block_restores_the_carry_bit_for_bit(tmp_path):
  """Stopped at step 4 (inside a reset block of 3 steps) and resumed from
  the checkpoint: the same parameters and final carry as an uninterrupted
  run; resumed from the initial carry instead, they differ."""
  from seqjax.checkpoint import Checkpointer
  b, every = 2, 3
  model, state0, data, loss_fn = _stateful_setup(lr=0.5)
  init = model.initial_carry(b)
  cfg = train_lib.FitConfig(batch_size=b, epochs=2, steps_per_call=2,
                            log_every_steps=0, checkpoint_every_steps=4,
                            nonfinite="stop")
  ref, ref_stats = train_lib.fit(_copy(state0), data, loss_fn, cfg,
                                 initial_carry=init, reset_every=every)
  calls = iter(range(1, 100))
  part, stats = train_lib.fit(_copy(state0), data, loss_fn, cfg,
                              checkpointer=Checkpointer(str(tmp_path), {}),
                              initial_carry=init, reset_every=every,
                              should_stop=lambda: next(calls) >= 2)
  assert stats.interrupted and int(part.step) == 4
  state, carry = Checkpointer(str(tmp_path), {}).restore_with_carry(
      _copy(state0), init)
  assert int(state.step) == 4
  _bits(carry, stats.final_carry)
  # The plain restore reads the same state and leaves the carry out.
  _bits(Checkpointer(str(tmp_path), {}).restore(_copy(state0)).params,
        state.params)
  got, got_stats = train_lib.fit(state, data, loss_fn, cfg,
                                 initial_carry=init, carry=carry,
                                 reset_every=every)
  _bits(got.params, ref.params)
  _bits(got.opt_state, ref.opt_state)
  _bits(got_stats.final_carry, ref_stats.final_carry)
  state, _ = Checkpointer(str(tmp_path), {}).restore_with_carry(
      _copy(state0), init)
  wrong, _ = train_lib.fit(state, data, loss_fn, cfg, initial_carry=init,
                           reset_every=every)
  assert not np.array_equal(wrong.params["params"]["rnn"]["kernel"],
                            ref.params["params"]["rnn"]["kernel"])


def _poisoned_stateful(loss_fn):
  def poisoned(params, batch, carry):
    loss, aux = loss_fn(params, batch, carry)
    return loss + jnp.where(batch["poison"].sum() > 0, jnp.nan, 0.0), aux
  return poisoned


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_stateful_nonfinite_stop_keeps_the_last_good_state_and_carry(
    tmp_path, steps_per_call):
  from seqjax import reliability
  from seqjax.checkpoint import Checkpointer
  b, every = 2, 3
  model, state0, data, loss_fn = _stateful_setup(lr=0.5)
  data["poison"] = np.zeros(len(data["x"]), np.float32)
  bad = 8                                   # rows 14, 15 (shuffle=False)
  data["poison"][(bad - 1) * b] = 1.0
  init = model.initial_carry(b)
  cfg = train_lib.FitConfig(batch_size=b, epochs=2, shuffle=False,
                            steps_per_call=steps_per_call, log_every_steps=0,
                            checkpoint_every_steps=5, nonfinite="stop")
  ckpt = Checkpointer(str(tmp_path), {}, max_to_keep=None)
  with pytest.raises(reliability.NonFiniteError,
                     match=rf"loss nan at step {bad} .*\(step {bad - 1}\)"):
    train_lib.fit(_copy(state0), data, _poisoned_stateful(loss_fn), cfg,
                  checkpointer=ckpt, initial_carry=init, reset_every=every)
  assert ckpt.latest_step() == bad - 1
  state, carry = Checkpointer(str(tmp_path), {}).restore_with_carry(
      _copy(state0), init)
  # Reference: a clean run stopped after bad - 1 steps, one step a call.
  clean = {**data, "poison": np.zeros_like(data["poison"])}
  calls = iter(range(1, 100))
  ref, stats = train_lib.fit(
      _copy(state0), clean, loss_fn,
      dataclasses.replace(cfg, steps_per_call=1, checkpoint_every_steps=0),
      initial_carry=init, reset_every=every,
      should_stop=lambda: next(calls) >= bad - 1)
  assert int(ref.step) == bad - 1
  _bits(state.params, ref.params)
  _bits(carry, stats.final_carry)
  assert all(np.isfinite(c).all() for c in carry)


def test_stateful_skip_keeps_the_carry_of_a_skipped_step():
  """"skip" drops the bad step's update and its carry: the next step starts
  from the carry the bad step was given (here: the last carry, no reset)."""
  b = 2
  model, state0, data, loss_fn = _stateful_setup(lr=0.0)
  data["poison"] = np.zeros(len(data["x"]), np.float32)
  data["poison"][-b] = 1.0                  # the last step of the epoch
  init = model.initial_carry(b)
  cfg = train_lib.FitConfig(batch_size=b, epochs=1, shuffle=False,
                            steps_per_call=4, log_every_steps=0,
                            nonfinite="skip")
  got, stats = train_lib.fit(_copy(state0), data, _poisoned_stateful(loss_fn),
                             cfg, initial_carry=init)
  assert stats.nonfinite_skipped == 1 and int(got.step) == 12
  short = {k: v[:-b] for k, v in data.items()}
  _, want = train_lib.fit(_copy(state0), short, loss_fn, cfg,
                          initial_carry=init)
  _bits(stats.final_carry, want.final_carry)
