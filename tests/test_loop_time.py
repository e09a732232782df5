"""The loop's clocks: compile time measured apart (seqjax.training.
compile_time), the steady pace and its ETA, the time budget predicting from
it, log lines by time, compile figures in the stats and rows."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import reverse
from seqjax import train as train_lib
from seqjax.training import compile_time
from seqjax.training import hooks as hooks_lib
from seqjax.training import pace as pace_lib
from seqjax.training import records


def _union_seconds(spans, grid=0.001):
  """The length of the spans' union, by counting grid cells."""
  ends = max(e for _, e in spans)
  cells = np.zeros(int(round(ends / grid)) + 1, bool)
  for s, e in spans:
    cells[int(round(s / grid)):int(round(e / grid))] = True
  return cells.sum() * grid


def test_ledger_counts_the_union_of_nested_spans_once():
  # A nested jit's trace lies in its caller's; spans arrive as they end.
  spans = [(2.0, 3.0), (1.0, 4.0), (6.0, 7.0), (3.5, 6.5), (10.0, 11.0),
           (10.5, 10.7), (0.5, 1.5)]
  ledger = compile_time.Ledger()
  since = compile_time.Since(ledger)
  for i, (s, e) in enumerate(spans):
    ledger.add("train" if i < 3 else "eval", s, e, compiled=i % 2 == 0)
  assert since.seconds() == pytest.approx(_union_seconds(spans), abs=1e-6)
  # Each kind is charged what its spans added to the union.
  assert since.seconds("train") == pytest.approx(
      _union_seconds(spans[:3]), abs=1e-6)
  assert since.count() == 4 and since.count("train") == 2
  assert since.fields()["compiles_eval"] == 2


def test_background_compiles_are_work_but_only_waits_are_lost_time():
  ledger = compile_time.Ledger()
  since = compile_time.Since(ledger)
  ledger.add("train", 0.0, 2.0, True)              # the first program
  ledger.add_background("train", 1.0, 9.0, True)   # while training ran
  ledger.add_background("eval", 2.0, 5.0, True)
  ledger.add("train", 9.0, 9.5, False)             # a wait for one of them
  assert since.seconds() == since.seconds("train") == 2.5
  assert since.count() == 3 and since.count("eval") == 1
  fields = since.fields()
  assert fields["compile_seconds"] == 2.5 + 8.0 + 3.0
  assert fields["compile_wait_seconds"] == 2.5
  assert fields["compile_seconds_eval"] == 3.0 and fields["compiles"] == 3


def test_jax_compiles_are_counted_by_kind():
  since = compile_time.Since()

  @jax.jit
  def eval_step_for_test(x):
    return x * 2 + 1

  eval_step_for_test(np.arange(3.0))
  eval_step_for_test(np.arange(3.0))            # cached: no compile
  with compile_time.phase("train"):
    eval_step_for_test(np.arange(4.0))          # a new shape, in training
  assert since.count("eval") == 1 and since.count("train") == 1
  assert since.seconds("eval") > 0 and since.seconds("train") > 0


_SHARED = {}


def _tiny_reverse(n=64):
  if "model" not in _SHARED:  # one model and optimizer: one train program
    cfg = reverse.ReverseConfig(n_features=6, n_steps_in=3, n_steps_out=2,
                                n_units=8)
    _SHARED["model"] = reverse.build_model(cfg)
    _SHARED["tx"] = train_lib.make_optimizer("adam")
  model, tx = _SHARED["model"], _SHARED["tx"]
  rng = np.random.default_rng(0)
  src = rng.integers(1, 6, (n, 3)).astype(np.int32)
  target = src[:, ::-1][:, :2].copy()
  dec_in = np.concatenate([np.zeros((n, 1), np.int32), target[:, :-1]], 1)
  batch = {"src": src, "dec_in": dec_in, "target": target}
  params = model.init(jax.random.key(0), src[:1], dec_in[:1])
  state = train_lib.create_train_state(model, params, tx)
  return model, state, batch


class FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _timed_call(loss_fn, clock, compile_s=0.0, call_s=0.0, shared=False):
  """A train call whose first call takes ``compile_s`` of compiling (a JAX
  compile span that long) on ``clock``, and every call ``call_s`` more.
  ``shared``: one jitted call for all such fits, compiled by the first, so
  the later ones' clocks see no real compile."""
  if shared:
    call = _SHARED.setdefault("call", train_lib.make_multi_step(loss_fn))
  else:
    call = train_lib.make_multi_step(loss_fn)
  calls = [0]

  def timed(*args):
    if calls[0] == 0 and compile_s:
      clock.now += compile_s
      jax.monitoring.record_event_time_span(
          compile_time.BACKEND_COMPILE, 5000.0, 5000.0 + compile_s,
          fun_name="jit(train_call_fake)")
    calls[0] += 1
    clock.now += call_s
    return call(*args)

  timed.__name__ = call.__name__
  return timed


def test_budget_predicts_from_the_steady_epoch_not_the_compile():
  # The first call compiles for 60 s; each epoch's evaluation takes 10 s.
  # With 115 s the epochs end at 70, 80, 90, 100, 110 s; a sixth would end
  # at 120 s. Predicting from the first epoch's 70 s would stop after one.
  budget, compile_s, epoch_s = 115.0, 60.0, 10.0
  expected, t = 0, compile_s
  while True:
    t, expected = t + epoch_s, expected + 1
    if t + epoch_s > budget:
      break
  model, state, batch = _tiny_reverse(16)
  clock = FakeClock()

  def epoch_end(state, epoch):
    clock.now += epoch_s
    return {}

  loss_fn = train_lib.make_seq2seq_loss(model)
  config = train_lib.FitConfig(batch_size=8, epochs=50, steps_per_call=1,
                               time_budget_secs=budget, progress="none")
  state, stats = train_lib.fit(
      state, batch, loss_fn, config, epoch_end_fn=epoch_end, clock=clock,
      multi_step=_timed_call(loss_fn, clock, compile_s))
  spe = train_lib.steps_per_epoch(len(batch["src"]), 8)
  assert expected == 5
  assert int(state.step) == expected * spe and stats.stopped_on_budget
  assert stats.compile["compile_seconds_train"] >= compile_s


def _simulated_budget_eta(used, budget, to_epoch_end, epoch_s):
  """Seconds until the budget hook stops: it stops at an epoch end where
  the time used plus another epoch passes the budget."""
  t = used + to_epoch_end
  while t + epoch_s <= budget:
    t += epoch_s
  return t - used


def test_pace_eta_leaves_compiles_out_and_honours_the_budget():
  clock, ledger = FakeClock(), compile_time.Ledger()
  pace = pace_lib.Pace(clock, compile_time.Since(ledger))
  assert pace.eta(0, 1000, 100) == (None, False)
  ledger.add("train", 0.0, 60.0, True)       # 60 s compiling, then
  clock.now, pace.steps = 70.0, 100          # 100 steps in 10 s
  assert pace.step_seconds() == pytest.approx(0.1)
  ledger.add("eval", 70.0, 73.0, True)       # an evaluation: 3 s compiling
  clock.now = 75.0
  pace.add_eval(5.0, 3.0)
  assert pace.step_seconds() == pytest.approx(0.1)
  # 900 steps at 0.1 s and 9 evaluations at 2 s.
  eta, by_budget = pace.eta(100, 1000, 100)
  assert eta == pytest.approx(900 * 0.1 + 9 * 2.0) and not by_budget
  pace.budget = (120.0, 0.0)
  eta, by_budget = pace.eta(100, 1000, 100)
  assert by_budget and eta == pytest.approx(
      _simulated_budget_eta(75.0, 120.0, 100 * 0.1 + 2.0, 100 * 0.1 + 2.0))
  pace.budget = (10_000.0, 0.0)              # a budget past the epochs
  assert pace.eta(100, 1000, 100) == (pytest.approx(108.0), False)


def _fit_lines(monkeypatch, log_every_steps, every_secs, lines=True):
  """A 2-epoch fit of 8 one-step calls an epoch, each 10 s on a fake
  clock -> (its log lines, its metrics rows)."""
  if not _SHARED.get("warm"):
    _SHARED["warm"] = True
    _fit_lines(monkeypatch, 0, 0.0, lines=False)  # compiles the shared call
  out, rows = [], []
  monkeypatch.setattr(hooks_lib, "report", out.append)
  model, state, batch = _tiny_reverse(64)
  clock = FakeClock()
  loss_fn = train_lib.make_seq2seq_loss(model)
  config = train_lib.FitConfig(
      batch_size=8, epochs=2, steps_per_call=1,
      log_every_steps=log_every_steps, log_every_secs=every_secs,
      progress="log" if lines else "none")
  log = records.MetricsLog(None)
  log.path, log.write = "rows", rows.append
  train_lib.fit(state, batch, loss_fn, config, clock=clock, metrics_log=log,
                multi_step=_timed_call(loss_fn, clock, call_s=10.0,
                                       shared=True))
  return out, rows


def test_lines_by_time_read_one_call_late(monkeypatch):
  lines, rows = _fit_lines(monkeypatch, 0, 30.0)
  # Calls end at 10, 20, ... s. At 30 s a line for the calls before the
  # last (steps 1-2); at 60 s steps 3-5; the epoch end's row at step 8
  # (80 s); then 110 s: steps 9-10, 140 s: steps 11-13; the end, 16.
  steps = [int(l.split()[1].split("/")[0]) for l in lines]
  assert steps == [2, 5, 8, 10, 13, 16]
  # Only the rows of the steps' rule: time lines write none.
  assert [r["step"] for r in rows] == [8, 16]
  # Each line's loss is the mean of its steps' losses (from a run logging
  # every step, the same seed): a time line's since the last line, a row's
  # since the last row.
  _, every = _fit_lines(monkeypatch, 1, 0.0, lines=False)
  loss = {r["step"]: r["loss"] for r in every}
  windows = [(1, 2), (3, 5), (1, 8), (9, 10), (11, 13), (9, 16)]
  for line, (a, b) in zip(lines, windows):
    mean = np.mean([loss[s] for s in range(a, b + 1)])
    assert float(line.split()[5]) == pytest.approx(mean, abs=1e-4)
  # The ETA: steady seconds per step (10 s) times the steps left after
  # the calls made (3 of 16).
  assert lines[0].endswith("ETA 130s")


def test_compiles_in_stats_and_rows():
  model, state, batch = _tiny_reverse(64)
  rows = []
  log = records.MetricsLog(None)
  log.path, log.write = "rows", rows.append
  config = train_lib.FitConfig(batch_size=8, epochs=1, steps_per_call=2,
                               log_every_steps=4, progress="none")
  _, stats = train_lib.fit(state, batch, train_lib.make_seq2seq_loss(model),
                           config, metrics_log=log)
  # One dataset, one call shape: the train call compiles once, before the
  # first row.
  assert [r["step"] for r in rows] == [4, 8]
  assert all(r["compiles_train"] == 1 for r in rows)
  assert stats.compile["compiles_train"] == stats.compiles == 1
  assert stats.compile["compile_seconds"] >= (
      stats.compile["compile_seconds_train"]) > 0


def test_report_goes_to_stderr_without_logging(capsys):
  from absl import logging
  before = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.WARNING)
    records.report("step 1/2")
    assert capsys.readouterr().err == "step 1/2\n"
  finally:
    logging.set_verbosity(before)


def test_own_reporting_hook_turns_the_time_lines_off(monkeypatch):
  out = []
  monkeypatch.setattr(hooks_lib, "report", out.append)
  model, state, batch = _tiny_reverse(64)
  clock = FakeClock()
  loss_fn = train_lib.make_seq2seq_loss(model)
  config = train_lib.FitConfig(batch_size=8, epochs=1, steps_per_call=1,
                               log_every_steps=0, log_every_secs=30.0)
  mine = hooks_lib.Log(0, 8, lines=False)
  train_lib.fit(state, batch, loss_fn, dataclasses.replace(config),
                clock=clock, hooks=[mine],
                multi_step=_timed_call(loss_fn, clock, call_s=10.0))
  # The epoch end's line only: no time lines at 30 and 60 s.
  assert [l.split()[1] for l in out] == ["8/8"]
