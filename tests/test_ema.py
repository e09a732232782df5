"""The EMA hook against a NumPy moving average of the parameter trajectory."""

import json

import jax
import numpy as np
import pytest

from seqjax import train as train_lib
from seqjax.data import reverse
from seqjax.models import ModelSettings, Seq2Seq
from seqjax.training.ema import EMA

DECAY = 0.8


class _Trajectory(train_lib.Hook):
  """The parameters after every step (a boundary at each)."""

  def __init__(self):
    self.params = []

  def begin(self, loop):
    self.params.append(jax.device_get(loop.state.params))

  def next_boundary(self, loop):
    return loop.step + 1

  def after_call(self, loop):
    self.params.append(jax.device_get(loop.state.params))


def _numpy_ema(trajectory):
  leaves = [[np.asarray(x, np.float64) for x in jax.tree.leaves(p)]
            for p in trajectory]
  ema = leaves[0]
  for now in leaves[1:]:
    ema = [DECAY * e + (1 - DECAY) * p for e, p in zip(ema, now)]
  return ema


def _setup():
  data = reverse.generate(np.random.default_rng(0), 64, 4, 2, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=8))
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(
      model, params, train_lib.make_optimizer("adam", 0.05))
  return state, data, train_lib.make_seq2seq_loss(model)


def _param_sum(state, epoch):
  del epoch
  return {"param_sum": float(sum(np.sum(np.asarray(x, np.float64))
                                 for x in jax.tree.leaves(state.params)))}


def test_ema_hook_is_the_numpy_average_of_the_trajectory():
  state, data, loss_fn = _setup()
  config = train_lib.FitConfig(batch_size=16, epochs=2, steps_per_call=3,
                               progress="none")
  trajectory, ema = _Trajectory(), EMA(DECAY)
  state, stats = train_lib.fit(state, data, loss_fn, config,
                               hooks=[trajectory, ema])
  assert stats.steps_run == 8 and len(trajectory.params) == 9
  want = _numpy_ema(trajectory.params)
  got = jax.tree.leaves(jax.device_get(ema.params))
  scale = max(float(np.abs(w).max()) for w in want)
  for w, g in zip(want, got):
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * scale)
  # Not the last parameters: the average lags them.
  last = jax.tree.leaves(trajectory.params[-1])
  assert max(float(np.abs(g - l).max()) for g, l in zip(got, last)) > 1e-3


def test_ema_flag_logs_the_average_evaluated_at_epoch_ends(tmp_path):
  state, data, loss_fn = _setup()
  config = train_lib.FitConfig(batch_size=16, epochs=2, steps_per_call=3,
                               progress="none", ema_decay=DECAY)
  trajectory = _Trajectory()
  path = str(tmp_path / "metrics.jsonl")
  train_lib.fit(state, data, loss_fn, config, epoch_end_fn=_param_sum,
                metrics_log=train_lib.MetricsLog(path), hooks=[trajectory])
  rows = [json.loads(l) for l in open(path)]
  ema_rows = [r for r in rows if "ema_param_sum" in r]
  assert [r["step"] for r in ema_rows] == [4, 8]
  for row in ema_rows:
    want = _numpy_ema(trajectory.params[:row["step"] + 1])
    np.testing.assert_allclose(row["ema_param_sum"],
                               sum(float(w.sum()) for w in want), rtol=1e-5)
    plain = [r for r in rows if r.get("eval") and r["step"] == row["step"]
             and "param_sum" in r]
    assert plain and abs(plain[0]["param_sum"] - row["ema_param_sum"]) > 1e-4


def _translate(tmp_path, name, epochs):
  from experiments import translate
  from tests import translate_util
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  return translate.run(translate.TranslateConfig(
      data_path=path, workdir=str(tmp_path / name), num_samples=0,
      validation_split=0.25, latent_dim=8, batch_size=10, epochs=epochs,
      log_every=0, n_examples=0, num_buckets=1, progress="none",
      n_attention_plots=0, ema_decay=DECAY))


def _saved(workdir, step, key, subdir="checkpoints"):
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(
      f"{workdir}/{subdir}/{step}/state")
  return [np.asarray(x) for x in jax.tree.leaves(state[key])]


def _ema_rows(workdir):
  rows = [json.loads(l) for l in open(f"{workdir}/metrics.jsonl")]
  return {r["step"]: r for r in rows if "ema_val_loss" in r}


@pytest.mark.full
def test_a_resumed_ema_run_equals_an_uninterrupted_one(tmp_path):
  from seqjax import translation
  whole = _translate(tmp_path, "whole", 2)
  _translate(tmp_path, "parts", 1)
  parts = _translate(tmp_path, "parts", 2)  # resumed at step 3
  a, b = str(tmp_path / "whole"), str(tmp_path / "parts")
  for step in (3, 6):
    for x, y in zip(_saved(a, step, "ema"), _saved(b, step, "ema")):
      np.testing.assert_array_equal(x, y)
  # Restarting the average from the resumed parameters would differ.
  restarted = [DECAY * e + (1 - DECAY) * p for e, p in zip(
      _saved(a, 3, "params"), _saved(a, 3, "params"))]
  assert any(not np.allclose(r, x) for r, x in
             zip(restarted, _saved(a, 3, "ema")))
  assert _ema_rows(a) == {k: v for k, v in _ema_rows(b).items()
                          if k in _ema_rows(a)} and len(_ema_rows(a)) == 2
  for key in ("val_loss", "val_chrf", "selected_step", "evaluated_params"):
    assert whole[key] == parts[key]
  # The model evaluated and handed back is the average at the selected step.
  step = whole["selected_step"]
  assert whole["evaluated_params"] == "ema"
  np.testing.assert_allclose(whole["val_loss"],
                             _ema_rows(a)[step]["ema_val_loss"], rtol=1e-6)
  got = jax.tree.leaves(jax.device_get(translation.load_translator(a).params))
  for g, e in zip(got, _saved(a, step, "ema", "best")):
    np.testing.assert_array_equal(g, e)


def test_another_decay_is_the_same_update_program_with_the_float32_bits():
  from seqjax.training import steps
  rng = np.random.RandomState(0)
  ema = {"w": rng.randn(40, 3).astype(np.float32)}
  params = {"w": rng.randn(40, 3).astype(np.float32)}
  hooks = [EMA(decay) for decay in (0.9, 0.999)]
  with steps.count_compiles("_average") as compiles:
    got = [h._update(h._weights, ema, params)["w"] for h in hooks]
  assert compiles.count <= 1  # the second decay compiles nothing
  for h, g in zip(hooks, got):
    want = (np.float32(h.decay) * ema["w"]
            + np.float32(1 - h.decay) * params["w"])
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6, atol=1e-7)
    # The bits of the program with the decay as a constant (XLA may fuse a
    # multiply-add, so NumPy's separate roundings are not the reference).
    d = h.decay
    constant = jax.jit(lambda e, p: d * e + (1 - d) * p)(ema["w"],
                                                         params["w"])
    np.testing.assert_array_equal(np.asarray(g), np.asarray(constant))
