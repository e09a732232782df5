"""Model selection and training control: keep-best, early stopping, the
learning-rate schedules, gradient clipping, addition's dev/test split.

The selection runs go through ``seqjax.runner`` on a tiny sort task whose
epoch-end metric is scripted, so which epoch is best is known in advance;
each epoch's parameters are fingerprinted as the epoch ends, the reference
for what the runner hands to ``evaluate``.
"""

import dataclasses
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import addition
from experiments import reverse
from experiments import sort as sort_exp
from seqjax import checkpoint as checkpoint_lib
from seqjax import models
from seqjax import runner
from seqjax import selection as selection_lib
from seqjax import summary
from seqjax import train as train_lib
from seqjax.errors import SeqjaxError
from tests import tiers

SPE = 4  # steps per epoch of the tiny sort: 64 samples, batch 16


class Scripted(sort_exp.SortTask):
  """Sort whose epoch end reports ``scores[epoch - 1]`` as "score"."""

  name = "scripted_sort"

  def __init__(self, scores, maximize=True):
    self.scores, self.select_maximize = list(scores), maximize
    self.seen = {}        # epoch -> (step, params fingerprint, learning rate)
    self.evaluated = None  # (step, params fingerprint) handed to evaluate

  def setup(self, config, workdir):
    setup = super().setup(config, workdir)

    def epoch_end(state, epoch):
      lr = train_lib.learning_rate_of(state.opt_state)
      self.seen[epoch] = (int(state.step),
                          summary.params_fingerprint(state.params),
                          None if lr is None else float(lr))
      return {"score": self.scores[epoch - 1]}

    return dataclasses.replace(setup, epoch_end=epoch_end,
                               select_metric="score",
                               select_maximize=self.select_maximize)

  def evaluate(self, config, setup, state):
    self.evaluated = (int(state.step), summary.params_fingerprint(state.params))
    return {"accuracy": 0.0}


def _config(tmp_path, **kw):
  values = dict(length=3, n_values=5, n_units=8, n_samples=64, n_eval=8,
                epochs=4, batch_size=16, learning_rate=0.01, log_every=0,
                steps_per_call=4, workdir=str(tmp_path / "run"))
  values.update(kw)
  return sort_exp.SortConfig(**values)


KEEP_BEST = [([0.1, 0.5, 0.3, 0.4], True, 2),
             ([3.0, 1.0, 2.0, 1.0], False, 2),  # a tie: the first stays
             ([0.1, 0.2, 0.3, 0.9], True, 4)]


# The fast tier: a minimized metric with a tie, and the last epoch best
# (the resume tests below keep a middle epoch); all three in the full tier.
@pytest.mark.parametrize("scores,maximize,best_epoch", tiers.tiered(
    KEEP_BEST, {1, 2}, lambda c: f"scores{KEEP_BEST.index(c)}-{c[1]}-{c[2]}",
    unpack=True))
def test_keep_best_keeps_and_evaluates_the_best_epoch(tmp_path, scores,
                                                      maximize, best_epoch):
  task = Scripted(scores, maximize)
  results = runner.run(task, _config(tmp_path))
  step, fingerprint, _ = task.seen[best_epoch]
  assert task.evaluated == (step, fingerprint)
  assert (results["selected_step"], results["selected_epoch"],
          results["select_value"], results["select_metric"]) == (
              step, best_epoch, scores[best_epoch - 1], "score")
  assert results["step"] == 4 * SPE and results["stopped_early"] is False
  workdir = tmp_path / "run"
  assert json.load(open(workdir / "best.json")) == {
      "step": step, "epoch": best_epoch, "metric": "score",
      "value": scores[best_epoch - 1], "maximize": maximize}
  assert sorted(os.listdir(workdir / "best")) == [str(step)]
  # The latest checkpoint is still there to resume from.
  assert max(int(n) for n in os.listdir(workdir / "checkpoints")
             if n.isdigit()) == 4 * SPE
  saved = json.load(open(workdir / "results.json"))
  assert saved["selected_step"] == step


def test_nokeep_best_evaluates_the_latest(tmp_path):
  task = Scripted([0.1, 0.5, 0.3, 0.4])
  results = runner.run(task, _config(tmp_path, keep_best=False))
  assert task.evaluated == task.seen[4][:2]
  assert results["selected_step"] == 4 * SPE
  assert results["select_value"] == 0.4
  assert not (tmp_path / "run" / "best").exists()


def test_a_resumed_run_keeps_the_best_so_far(tmp_path):
  # Epochs 1-2, then the same workdir to epoch 4: 0.3 and 0.4 do not beat
  # epoch 2's 0.5 (a fresh record would have picked epoch 4).
  task = Scripted([0.1, 0.5, 0.3, 0.4])
  runner.run(task, _config(tmp_path, epochs=2))
  results = runner.run(task, _config(tmp_path, epochs=4))
  assert sorted(task.seen) == [1, 2, 3, 4]
  assert task.evaluated == task.seen[2][:2]
  assert (results["selected_epoch"], results["select_value"]) == (2, 0.5)


def test_a_best_lost_between_two_saves_is_saved_on_resume(tmp_path):
  # Killed after the latest checkpoint of the best epoch, before its best
  # copy: the resumed run saves it from the restored state.
  task = Scripted([0.1, 0.5, 0.3, 0.4])
  runner.run(task, _config(tmp_path, epochs=2))
  for name in ("best", "best.json"):
    path = tmp_path / "run" / name
    os.system(f"rm -rf '{path}'")
  runner.run(task, _config(tmp_path, epochs=4))
  assert task.evaluated == task.seen[2][:2]
  assert json.load(open(tmp_path / "run" / "best.json"))["step"] == 2 * SPE


# Patience 1 and 3 in the fast tier, 2 as well in the full tier.
@pytest.mark.parametrize("patience", tiers.tiered([1, 2, 3], {0, 2}, str))
def test_early_stopping_after_exactly_patience_epochs(tmp_path, patience):
  scores = [0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.99]  # best: epoch 2
  task = Scripted(scores)
  results = runner.run(task, _config(tmp_path, epochs=8, patience=patience))
  assert sorted(task.seen) == list(range(1, 3 + patience))
  assert results["stopped_early"] is True
  assert results["stopped_epoch"] == 2 + patience
  assert results["step"] == (2 + patience) * SPE
  assert task.evaluated == task.seen[2][:2]
  # The same command again: stopped, nothing trained.
  again = runner.run(task, _config(tmp_path, epochs=8, patience=patience))
  assert sorted(task.seen) == list(range(1, 3 + patience))
  assert again["stopped_early"] is True and again["step"] == results["step"]


def test_patience_reaching_the_last_epoch_is_no_early_stop(tmp_path):
  task = Scripted([0.5, 0.4, 0.3, 0.2])
  results = runner.run(task, _config(tmp_path, epochs=4, patience=3))
  assert sorted(task.seen) == [1, 2, 3, 4]
  assert results["stopped_early"] is False


def _expected_plateau(lr, scores, lr_patience, factor=0.5):
  """The learning rate each epoch trains at, by the rule written out."""
  rates, best, wait = [], -math.inf, 0
  for score in scores:
    rates.append(lr)
    if score > best:
      best, wait = score, 0
    else:
      wait += 1
      if wait >= lr_patience:
        lr, wait = lr * factor, 0
  return rates


def test_plateau_halves_the_rate_exactly_when_due_and_survives_a_resume(
    tmp_path):
  scores = [1.0, 0.5, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0]
  expected = _expected_plateau(0.01, scores, lr_patience=2)
  assert expected[2:4] == [0.01, 0.005]  # the cut is after epoch 3
  flags = dict(epochs=8, lr_schedule="plateau", lr_patience=2)
  whole = Scripted(scores)
  runner.run(whole, _config(tmp_path / "whole", **flags))
  np.testing.assert_allclose([whole.seen[e][2] for e in range(1, 9)],
                             expected, rtol=1e-6)

  # Killed after epoch 3 (its checkpoint holds the halved rate), resumed.
  split = Scripted(scores)
  runner.run(split, _config(tmp_path / "split", **{**flags, "epochs": 3}))
  results = runner.run(split, _config(tmp_path / "split", **flags))
  np.testing.assert_allclose([split.seen[e][2] for e in range(1, 9)],
                             expected, rtol=1e-6)
  # Bit for bit the uninterrupted run, compiled once.
  assert split.seen == whole.seen and split.evaluated == whole.evaluated
  assert results["train_compiles"] == 1
  rows = [json.loads(l) for l in open(tmp_path / "split" / "run" /
                                       "metrics.jsonl")]
  train_rows = [r for r in rows if not r.get("eval")]
  assert train_rows and all("learning_rate" in r for r in train_rows)


def _tiny_reverse():
  cfg = reverse.ReverseConfig(n_features=6, n_steps_in=3, n_steps_out=2,
                              n_units=8)
  model = reverse.build_model(cfg)
  rng = np.random.default_rng(0)
  src = rng.integers(1, 6, (16, 3)).astype(np.int32)
  target = src[:, ::-1][:, :2].copy()
  dec_in = np.concatenate([np.zeros((16, 1), np.int32), target[:, :-1]], 1)
  batch = {"src": src, "dec_in": dec_in, "target": target}
  params = model.init(jax.random.key(0), src[:1], dec_in[:1])
  return model, params, batch


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("clip_norm", [0.05, 1e6])
def test_clipping_is_the_global_norm_clip_by_hand(clip_norm):
  model, params, batch = _tiny_reverse()
  loss_fn = train_lib.make_seq2seq_loss(model)
  grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
  g = _flat(grads).astype(np.float64)
  norm = np.sqrt((g ** 2).sum())
  assert (norm > clip_norm) == (clip_norm < 1)  # clipping active or not
  scale = min(1.0, clip_norm / norm)
  lr = 0.1
  tx = train_lib.make_optimizer("sgd", lr, clip_norm=clip_norm)
  state = train_lib.create_train_state(model, params, tx)
  new, _ = train_lib.make_train_step(loss_fn)(state, batch)
  np.testing.assert_allclose(_flat(new.params),
                             _flat(params) - lr * scale * g, rtol=1e-5,
                             atol=1e-7)


def test_clip_norm_flag_reaches_the_optimizer():
  model, params, batch = _tiny_reverse()
  cfg = reverse.ReverseConfig(clip_norm=0.05, optimizer="adam")
  tx = runner.make_tx(cfg, cfg.fit_config(), batch, None, False, 0)
  reference = optax.chain(optax.clip_by_global_norm(0.05),
                          optax.adam(1e-3, eps=1e-7))
  loss_fn = train_lib.make_seq2seq_loss(model)
  grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
  mine, _ = tx.update(grads, tx.init(params), params)
  theirs, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_array_equal(_flat(mine), _flat(theirs))


def test_the_default_optimizer_is_the_plain_optax_one():
  params = {"w": jnp.ones(3)}
  plain = optax.adam(1e-3, eps=1e-7).init(params)
  mine = train_lib.make_optimizer("adam").init(params)
  assert jax.tree.structure(mine) == jax.tree.structure(plain)
  assert train_lib.learning_rate_of(mine) is None


def test_warmup_decay_follows_the_formula_and_is_logged(tmp_path):
  peak, warmup, total = 0.02, 3, 10
  lr = train_lib.warmup_cosine(peak, warmup, total)
  for count in range(total):
    want = (peak * (count + 1) / warmup if count < warmup else
            0.5 * peak * (1 + math.cos(math.pi * (count - warmup) /
                                       (total - warmup))))
    np.testing.assert_allclose(float(lr(count)), want, rtol=1e-6)
  # Through fit: each row logs the rate of the step before it.
  model, params, batch = _tiny_reverse()
  tx = train_lib.make_optimizer("adam", peak, schedule="warmup_decay",
                                warmup_steps=warmup, total_steps=total)
  state = train_lib.create_train_state(model, params, tx)
  log = train_lib.MetricsLog(str(tmp_path / "m.jsonl"))
  train_lib.fit(state, batch, train_lib.make_seq2seq_loss(model),
                train_lib.FitConfig(batch_size=8, epochs=5, log_every_steps=1,
                                    steps_per_call=1), metrics_log=log)
  rows = [json.loads(l) for l in open(tmp_path / "m.jsonl")]
  np.testing.assert_allclose([r["learning_rate"] for r in rows],
                             [float(lr(r["step"] - 1)) for r in rows],
                             rtol=1e-5)  # float32, jitted or not
  assert [r["step"] for r in rows] == list(range(1, total + 1))


def test_tracker_counts():
  t = selection_lib.Tracker("m")
  assert [t.update({"m": v}, 0, e) for e, v in enumerate(
      [1.0, float("nan"), 1.0, 2.0, 0.5], 1)] == [True, False, False, True,
                                                  False]
  assert (t.best, t.best_epoch, t.bad_epochs) == (2.0, 4, 1)
  with pytest.raises(SeqjaxError, match="'m' is not among the epoch-end "
                     "metrics \\(x\\)"):
    t.update({"x": 1.0}, 0, 6)
  again = selection_lib.Tracker.from_json(t.to_json(), "m", True)
  assert again == t
  assert selection_lib.Tracker.from_json(t.to_json(), "other", True).best is None


def test_fit_refuses_selection_features_without_a_metric():
  model, params, batch = _tiny_reverse()
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  loss_fn = train_lib.make_seq2seq_loss(model)
  with pytest.raises(ValueError, match="patience: model selection needs"):
    train_lib.fit(state, batch, loss_fn,
                  train_lib.FitConfig(batch_size=8, patience=2))
  with pytest.raises(ValueError, match="make_optimizer\\(schedule='plateau'"):
    train_lib.fit(state, batch, loss_fn, train_lib.FitConfig(
        batch_size=8, select_metric="m", lr_schedule="plateau"))


@pytest.mark.parametrize("flags,message", [
    ({"patience": -1}, "--patience must be >= 0; got -1"),
    ({"lr_schedule": "cyclic"}, "--lr_schedule must be one of constant, "
     "plateau, warmup_decay; got 'cyclic'"),
    ({"clip_norm": -1.0}, "--clip_norm must be >= 0; got -1.0"),
    ({"clip_norm": math.nan}, "--clip_norm must be a finite number"),
    ({"lr_decay_factor": 1.0}, "--lr_decay_factor must be in (0, 1)"),
    ({"lr_patience": 0}, "--lr_patience must be positive"),
    ({"warmup_steps": -5}, "--warmup_steps must be >= 0"),
])
def test_bad_flags_are_named(tmp_path, flags, message):
  cfg = _config(tmp_path, **flags)
  assert any(message in e for e in cfg.validate()), cfg.validate()
  with pytest.raises(SeqjaxError, match=re.escape(message)):
    runner.run(Scripted([1.0] * 4), cfg)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,message", [
    ({"patience": 2}, "--patience=2: task sort selects by no held-out metric"),
    ({"lr_schedule": "plateau"}, "--lr_schedule=plateau: task sort"),
    ({"keep_best": True}, "--keep_best: task sort"),
])
def test_selection_needs_a_task_that_selects(tmp_path, flags, message):
  with pytest.raises(SeqjaxError, match=re.escape(message)):
    sort_exp.run(_config(tmp_path, **flags))
  assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_another_optimizer_setup_is_refused(tmp_path):
  task = Scripted([1.0, 2.0])
  runner.run(task, _config(tmp_path, epochs=1))
  ckpts = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match="lr_schedule: checkpoint None, now 'plateau'"):
    runner.run(task, _config(tmp_path, epochs=2, lr_schedule="plateau"))
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match="gradient_clipping: checkpoint None, now True"):
    runner.run(task, _config(tmp_path, epochs=2, clip_norm=1.0))
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match="n_units: checkpoint 8, now 9"):
    runner.run(task, _config(tmp_path, epochs=2, n_units=9))
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ckpts


def _pairs(split):
  return set(zip(split["a"].tolist(), split["b"].tolist()))


def test_addition_dev_and_test_are_disjoint_and_unseen_in_training(tmp_path):
  cfg = addition.AdditionConfig(digits=2, training_size=1000, hidden_size=8,
                                epochs=1, n_examples=0, log_every=0,
                                workdir=str(tmp_path / "a"))
  task = addition.AdditionTask()
  setup = task.setup(cfg, str(tmp_path / "a"))
  splits = setup.data.splits
  train, dev, test = (_pairs(splits[k]) for k in ("train", "dev", "test"))
  assert (len(train), len(dev), len(test)) == (900, 50, 50)
  assert not (train & dev) and not (train & test) and not (dev & test)
  assert setup.select_metric == "dev_exact_match" and task.metric == (
      "dev_exact_match")
  # Training decodes dev only; test is decoded once, in evaluate().
  decoded, held_out = [], setup.data
  predict = held_out.predict

  def spy(params, src, final=False):
    decoded.append(next(k for k, v in splits.items() if v["src"] is src))
    return predict(params, src, final)

  held_out.predict = spy
  out = held_out.epoch_end(
      train_lib.create_train_state(setup.model, runner.init_params(
          task, setup, 0), train_lib.make_optimizer("adam")), 1)
  assert set(out) == {"dev_exact_match", "dev_token_accuracy"}
  assert decoded == ["dev"]


def test_time_budget_stops_after_the_last_epoch_that_fits():
  # Each epoch takes 10 s on the fake clock: with 35 s, epochs 1-3 end at
  # 10, 20, 30 s; a fourth would end at 40 s, past the budget.
  model, params, batch = _tiny_reverse()
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  now = [0.0]

  def epoch_end(state, epoch):
    now[0] += 10.0
    return {}
  config = train_lib.FitConfig(batch_size=8, epochs=10, steps_per_call=1,
                               time_budget_secs=35.0)
  state, stats = train_lib.fit(state, batch, train_lib.make_seq2seq_loss(
      model), config, epoch_end_fn=epoch_end, clock=lambda: now[0])
  spe = train_lib.steps_per_epoch(len(batch["src"]), 8)
  assert int(state.step) == 3 * spe and stats.stopped_on_budget
  # Without a budget the same run trains every epoch.
  now[0] = 0.0
  model, params, batch = _tiny_reverse()  # the first fit donated its state
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  state, stats = train_lib.fit(state, batch, train_lib.make_seq2seq_loss(
      model), dataclasses.replace(config, time_budget_secs=0.0),
      epoch_end_fn=epoch_end, clock=lambda: now[0])
  assert int(state.step) == 10 * spe and not stats.stopped_on_budget
