"""The one loop over a leading members axis: a group of runs of one shape,
their states stacked, trained by one vmapped call (``steps.make_group_call``
), each member a ``loop.Loop`` of its own with its own hooks (log,
checkpoints, evaluation, non-finite stop...), data order and metrics rows.
"""

from __future__ import annotations

import collections.abc
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from seqjax import reliability
from seqjax.training.hooks import Interrupt
from seqjax.training.loop import Loop
from seqjax.training.schedules import Feed
from seqjax.training.steps import compiles_of


class MemberLoop(Loop):
  """Member ``i`` of ``group`` (a holder of the stacked state) as a loop:
  its hooks see its slice as a lone run's state (``lone``), which they read
  and save; only the group's call changes it."""

  def __init__(self, group, i: int, step_fn, hooks, epochs: int,
               metrics_log, lone: Callable):
    self.group, self.i, self.lone = group, i, lone
    super().__init__(None, step_fn, hooks, epochs, metrics_log)
    self.error: Optional[str] = None

  @property
  def state(self):
    return self.lone(jax.tree.map(lambda x: x[self.i], self.group.state))

  @state.setter
  def state(self, value):
    if value is not None:
      raise ValueError("a group member's state is changed by the group's "
                       "call alone (a learning-rate schedule is not "
                       "trained in a group)")

  @property
  def live(self) -> bool:
    return self.error is None and not self.stopped and self.step < self.total

  def save(self):
    if self.checkpointer is not None:
      self.checkpointer.save(self.state, **self.save_fields)


class MemberStep:
  """What a member's loop asks of its ``step``: its schedule and feed."""

  def __init__(self, schedule, seed: int, k_max: int, call):
    self.schedule, self.call = schedule, call
    self.feed = Feed(schedule, seed, k_max, None)

  @property
  def steps_per_epoch(self) -> int:
    return self.schedule.steps_per_epoch

  def saved_carry(self):
    return None

  def compiles(self) -> int:
    return compiles_of(self.call)


class _Holder:
  def __init__(self, state):
    self.state = state


class _PollOncePerCall:
  """``should_stop`` asked once per group call, the answer shared by the
  members."""

  def __init__(self, should_stop):
    self.should_stop, self.call, self.answer = should_stop, -1, False

  def at(self, call: int) -> bool:
    if call != self.call:
      self.call, self.answer = call, bool(self.should_stop())
    return self.answer


def fit_members(group, data, call, steps: Sequence[MemberStep],
                hooks: Sequence[Sequence], epochs: Sequence[int], *,
                metrics_logs: Sequence, lone: Callable, place: Callable,
                should_stop: Optional[Callable[[], bool]] = None,
                done: Optional[Sequence] = None):
  """Trains the stacked ``group`` with ``call`` (``group, data, idx_NKB,
  valid_NK, halted_N -> group, halted_N, metrics_NK``): member i from its
  own step to ``epochs[i]`` epochs, ``hooks[i]`` acting on it after each
  call. Members behind (a resume cut short) train first, alone, until
  level; with several datasets (``data`` a list, a ``BucketPlan``) a call
  trains the members whose next batches are in one of them. A member's non-finite stop (``reliability.NonFiniteError``) ends
  that member only. ``should_stop()`` is asked once per call: every member
  saves and stops. ``done[i]``: the stats of a member with nothing left to
  train (patience spent), which sits the run out. -> (group, the members'
  loops)."""
  holder, n, calls = _Holder(group), len(steps), [0]
  if should_stop is not None:
    poll = _PollOncePerCall(should_stop)
    hooks = [list(h) + [Interrupt(lambda: poll.at(calls[0]))] for h in hooks]
  loops = [MemberLoop(holder, i, steps[i], hooks[i], epochs[i],
                      metrics_logs[i], lone) for i in range(n)]
  for loop, stats in zip(loops, done or [None] * n):
    if stats is not None:
      loop.stats, loop.stopped, loop.hooks = stats, True, []
    for hook in loop.hooks:
      hook.begin(loop)
  k_max, bsz = steps[0].feed.k_max, steps[0].schedule.batch_size
  halted = place(np.zeros(n, bool))
  logging.info("Training a group of %d member(s), %d steps per call, from "
               "step(s) %s.", n, k_max, sorted({l.step for l in loops}))
  while any(l.live for l in loops):
    live = [l for l in loops if l.live]
    low = min(l.step for l in live)
    active = [l for l in live if l.step == low]
    ahead = [l.step for l in live if l.step > low]
    feeds = {l.i: l.step_fn.feed(l.step, min([l.next_boundary()] + ahead))
             for l in active}
    # One dataset a call (a BucketPlan's): the others' members wait a call.
    dataset = feeds[active[0].i][0]
    active = [l for l in active if feeds[l.i][0] == dataset]
    idx = np.zeros((n, k_max, bsz), np.int32)
    valid = np.zeros((n, k_max), bool)
    for l in active:
      idx[l.i], valid[l.i] = feeds[l.i][2][:2]
      if l.t_first is None:
        l.t_first = time.perf_counter()
    holder.state, halted, metrics_NK = call(
        holder.state, data if dataset is None else data[dataset],
        place(idx), place(valid), halted)
    host, calls[0] = _HostMetrics(metrics_NK), calls[0] + 1
    for l in active:
      l.record(feeds[l.i][1], host.of(l.i), l.step)
    for l in active:
      _after_call(l)
  for l in loops:
    l.finish()
    for hook in l.hooks:
      hook.end(l)
  return holder.state, loops


def _after_call(loop: MemberLoop):
  try:
    for hook in loop.hooks:
      hook.after_call(loop)
      if loop.stopped:
        break
  except reliability.NonFiniteError as e:
    loop.error = (f"{e} (Member {loop.i}: the others of its group went on.)")
    logging.warning("Member %d: %s", loop.i, loop.error)


class _HostMetrics:
  """One group call's metrics, fetched to the host once, when a member's
  are first read (``of``)."""

  def __init__(self, metrics_NK):
    self.metrics_NK, self._host = metrics_NK, None

  def host(self) -> dict:
    if self._host is None:
      self._host = {k: np.asarray(v) for k, v in
                    jax.device_get(self.metrics_NK).items()}
    return self._host

  def of(self, i: int) -> "_MemberMetrics":
    return _MemberMetrics(self, i)


class _MemberMetrics(collections.abc.Mapping):
  """Member i's metrics_K of a call, read from the host copy."""

  def __init__(self, call: _HostMetrics, i: int):
    self.call, self.i = call, i

  def __getitem__(self, name):
    return self.call.host()[name][self.i]

  def __iter__(self):
    return iter(self.call.metrics_NK)

  def __len__(self):
    return len(self.call.metrics_NK)
