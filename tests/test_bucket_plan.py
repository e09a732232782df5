"""fit over several datasets (length buckets) with a BucketPlan."""

import functools
import threading

import jax
import numpy as np
import pytest

from seqjax import train as train_lib
from seqjax.data import reverse
from seqjax.models import ModelSettings, Seq2Seq
from seqjax.training import programs as programs_lib
from seqjax.training import schedules


def test_plan_uses_each_row_at_most_once_per_epoch():
  plan = train_lib.BucketPlan(sizes=(50, 23, 64), batch_size=8, group=3)
  assert plan.steps_per_epoch == 6 + 2 + 8 and plan.num_examples == 137
  dataset_S, rows = plan.epoch(seed=0, epoch=0)
  rows_SB = rows.reshape(-1, 8)
  assert len(dataset_S) == len(rows_SB) == plan.steps_per_epoch
  for d, n in enumerate(plan.sizes):
    used = rows_SB[dataset_S == d].ravel()
    assert len(used) == n // 8 * 8 == len(set(used.tolist()))
    assert used.max() < n
  _check_groups(plan, dataset_S)
  again = plan.epoch(seed=0, epoch=0)
  np.testing.assert_array_equal(again[1], rows)
  assert not np.array_equal(plan.epoch(seed=0, epoch=1)[1], rows)
  assert not np.array_equal(plan.epoch(seed=1, epoch=0)[1], rows)


def _maximal_runs(dataset_S):
  """[(dataset, length)] of the maximal runs of equal entries."""
  runs = []
  for d in dataset_S.tolist():
    if runs and runs[-1][0] == d:
      runs[-1][1] += 1
    else:
      runs.append([d, 1])
  return runs


def _check_groups(plan, dataset_S):
  """Dataset d's k_d batches come in ceil(k_d / group) groups, each kept
  together (all `group` long but the last): a maximal run of d is a whole
  number of them, and there are at most as many runs as groups."""
  runs = _maximal_runs(dataset_S)
  groups = 0
  for d, n in enumerate(plan.sizes):
    k = n // plan.batch_size
    sizes = [plan.group] * (k // plan.group) + (
        [k % plan.group] if k % plan.group else [])
    groups += len(sizes)
    for _, length in (r for r in runs if r[0] == d):
      # A sum of some of the group sizes (all equal but possibly one).
      full, rest = sizes.count(plan.group), sizes[-1] % plan.group
      assert any(length == a * plan.group + b * rest
                 for a in range(full + 1) for b in (0, 1) if a + b), (
                     d, length, sizes)
  assert len(runs) <= groups, (runs, groups)
  return runs


def test_plan_keeps_groups_together_and_shuffles_them():
  plan = train_lib.BucketPlan(sizes=(50, 23, 64), batch_size=8, group=3)
  # Groups: dataset 0 3+3, dataset 1 2, dataset 2 3+3+2: 6 in all.
  lengths = {0: set(), 2: set()}
  for seed in range(20):
    dataset_S, _ = plan.epoch(seed=seed, epoch=0)
    for d, length in _check_groups(plan, dataset_S):
      lengths.get(d, set()).add(length)
  # Groups of 3 do not always stay adjacent: runs of one group are seen.
  assert 3 in lengths[0] and {2, 3} & lengths[2], lengths
  one = train_lib.BucketPlan(sizes=(50, 23, 64), batch_size=8, group=1)
  assert max(len(_maximal_runs(one.epoch(seed=s, epoch=0)[0]))
             for s in range(5)) > 6  # group=1: batches interleave freely
  flat = train_lib.BucketPlan(sizes=(50, 23, 64), batch_size=8, group=3,
                              shuffle=False)
  dataset_S, rows = flat.epoch(seed=0, epoch=0)
  assert dataset_S.tolist() == [0] * 6 + [1] * 2 + [2] * 8
  np.testing.assert_array_equal(rows[:48], np.arange(48))


def test_run_length():
  plan = train_lib.BucketPlan(sizes=(8,), batch_size=4)
  ds = np.array([0, 0, 1, 1, 1, 0])
  assert [plan.run_length(ds, i) for i in range(6)] == [2, 1, 3, 2, 1, 1]


def _buckets():
  """Two datasets of different widths, as length buckets have."""
  short = reverse.generate(np.random.default_rng(0), 40, 4, 2, 9)
  long = reverse.generate(np.random.default_rng(1), 56, 6, 3, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=16))
  params = model.init(jax.random.key(0), short["src"][:1], short["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  return state, [short, long], train_lib.make_seq2seq_loss(model)


def test_fit_with_plan_equals_single_steps_and_resumes_exactly():
  state, data, loss_fn = _buckets()
  plan = train_lib.BucketPlan(sizes=(40, 56), batch_size=8, group=2)
  cfg = train_lib.FitConfig(batch_size=8, epochs=2, steps_per_call=3,
                            log_every_steps=5)
  # Reference: one jitted step at a time, in the plan's order.
  step = jax.jit(train_lib.make_train_step(loss_fn))
  ref = state
  for epoch in range(2):
    dataset_S, rows = plan.epoch(cfg.seed, epoch)
    for d, idx in zip(dataset_S, rows.reshape(-1, 8)):
      ref, _ = step(ref, {k: v[idx] for k, v in data[d].items()})

  multi_step = train_lib.make_multi_step(loss_fn)  # shared: compiled once
  half, _ = train_lib.fit(jax.tree.map(jax.numpy.array, state), data, loss_fn,
                          train_lib.FitConfig(batch_size=8, epochs=1,
                                              steps_per_call=3),
                          batch_plan=plan, multi_step=multi_step)
  fitted, stats = train_lib.fit(state, data, loss_fn, cfg, batch_plan=plan,
                                multi_step=multi_step)
  assert stats.steps_run == 2 * plan.steps_per_epoch == int(fitted.step)
  assert stats.compiles == 2  # once per dataset shape
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               ref.params, fitted.params)
  # Resumed after one epoch: the same batches, the same parameters.
  resumed, stats = train_lib.fit(half, data, loss_fn, cfg, batch_plan=plan,
                                 multi_step=multi_step)
  assert stats.steps_run == plan.steps_per_epoch and stats.compiles == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               fitted.params, resumed.params)


def test_plan_batch_size_must_match():
  state, data, loss_fn = _buckets()
  with pytest.raises(ValueError, match="batch_size"):
    train_lib.fit(state, data, loss_fn, train_lib.FitConfig(batch_size=4),
                  batch_plan=train_lib.BucketPlan((40, 56), batch_size=8))


def test_dataset_programs_compile_once_each_and_train_as_direct_calls():
  state, data, loss_fn = _buckets()
  plan = train_lib.BucketPlan(sizes=(40, 56), batch_size=8, group=2)
  cfg = train_lib.FitConfig(batch_size=8, epochs=1, steps_per_call=3)
  multi_step = train_lib.make_multi_step(loss_fn)
  valid_steps = []

  @functools.wraps(multi_step)  # its name: fit counts its compiles
  def direct(state, carry, data_, idx, valid, reset, halted):
    valid_steps.append(int(np.asarray(valid).sum()))
    return multi_step(state, carry, data_, idx, valid, reset, halted)
  # A plain function (no .lower): fit calls it as it is, no warm-up.
  ref, _ = train_lib.fit(jax.tree.map(jax.numpy.array, state), data, loss_fn,
                         cfg, batch_plan=plan, multi_step=direct)
  assert min(valid_steps) > 0 and sum(valid_steps) == plan.steps_per_epoch
  fresh = train_lib.make_multi_step(loss_fn)
  fitted, stats = train_lib.fit(state, data, loss_fn, cfg, batch_plan=plan,
                                multi_step=fresh)
  assert stats.compiles == 2 and stats.steps_run == plan.steps_per_epoch
  jax.tree.map(np.testing.assert_array_equal, ref.params, fitted.params)


class _FakeLowered:
  def __init__(self, log, gate, shape):
    self.log, self.gate, self.shape = log, gate, shape

  def compile(self):
    self.log.append(("start", self.shape))
    if self.gate is not None:
      assert self.gate.wait(10)
    self.log.append(("done", self.shape))
    return self.shape


class _FakeJit:
  """Logs the start and end of each compile by shape; the compile of shape
  ``slow`` waits for ``gate``."""

  def __init__(self, slow):
    self.log, self.slow, self.gate = [], slow, threading.Event()

  def lower(self, x):
    return _FakeLowered(self.log, self.gate if x.shape == self.slow else None,
                        x.shape)


def test_programs_compile_in_order_and_the_first_waits_for_its_own_only():
  fake = _FakeJit(slow=(2,))
  programs = programs_lib.Programs(fake)
  for key, n in (("a", 1), ("b", 2), ("c", 3)):
    programs.submit(key, (np.zeros(n),))
  # "b" is stuck compiling; "a" is ready anyway.
  assert programs.get("a", (np.zeros(1),)) is fake
  assert ("done", (2,)) not in fake.log
  fake.gate.set()
  assert programs.get("c", (np.zeros(3),)) is fake
  assert programs.get("b", (np.zeros(2),)) is fake
  assert fake.log == [("start", (1,)), ("done", (1,)), ("start", (2,)),
                      ("done", (2,)), ("start", (3,)), ("done", (3,))]
  # A key never submitted compiles on demand; a submitted one never again.
  assert programs.get("d", (np.zeros(4),)) is fake
  assert programs.get("a", (np.zeros(1),)) is fake
  assert len(fake.log) == 8
  programs.close()


def test_datasets_in_order_follow_the_epochs_first_meetings():
  plan = train_lib.BucketPlan(sizes=(16, 80, 24, 40), batch_size=8, group=1)
  feed = schedules.Feed(plan, seed=3, k_max=2, mesh=None)
  spe = plan.steps_per_epoch
  for step in (0, 5, spe - 1, spe + 2):
    upcoming = np.concatenate([plan.epoch(3, step // spe)[0][step % spe:],
                               plan.epoch(3, step // spe + 1)[0]])
    _, first = np.unique(upcoming, return_index=True)
    expected = sorted(range(4), key=lambda d: first[d])
    assert feed.datasets_in_order(step, 4) == expected
