"""The one training loop: ``fit(state, data, step, hooks)``.

A straight loop: ask the hooks where their next boundary is, run one train
call up to it (``TrainCall``: K steps scanned in one jitted call), hand the
loop to each hook (``seqjax.training.hooks``: log, checkpoint, evaluation,
selection, time budget, interrupt, non-finite monitor, progress). A call
never crosses an epoch end or a hook's boundary, so a hook sees the state at
its step; the data order is a function of (seed, epoch), so a resumed run
sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import sharding as sharding_lib
from seqjax.training import compile_time
from seqjax.training.pace import Pace
from seqjax.training.programs import Programs
from seqjax.training.records import FitStats, MetricsLog, reduce_rows
from seqjax.training.schedules import Feed
from seqjax.training.steps import StreamCarry, compiles_of


class TrainCall:
  """The ``step`` of ``fit``: a train call (``steps.make_multi_step``) fed
  by a schedule (``seqjax.training.schedules``). Holds what passes from one
  call to the next: the carry of a stateful run and the halted flag."""

  def __init__(self, call, schedule, seed: int, steps_per_call: int,
               mesh=None, carry=()):
    self.call, self.schedule, self.carry = call, schedule, carry
    self.feed = Feed(schedule, seed, max(1, steps_per_call), mesh)
    self.halted = (jnp.zeros((), bool) if mesh is None else
                   sharding_lib.replicate(np.zeros((), bool), mesh))
    self.programs = None  # per dataset, once warm_up has queued them

  @property
  def steps_per_epoch(self) -> int:
    return self.schedule.steps_per_epoch

  def __call__(self, state, data, step: int, limit: int):
    """Trains from ``step`` up to ``limit`` -> (state, steps k, metrics_K)."""
    dataset, k, inputs = self.feed(step, limit)
    args = (state, self.carry, data if dataset is None else data[dataset],
            *inputs, self.halted)
    call = (self.call if self.programs is None else
            self.programs.get(dataset, args))
    state, self.carry, self.halted, metrics_K = call(*args)
    return state, k, metrics_K

  def warm_up(self, state, data, step: int, total: int):
    """With several datasets (a ``BucketPlan``): queues the call's compile
    for each one's shapes in the order training meets them, in the
    background (``Programs``)."""
    if not isinstance(data, (list, tuple)) or not hasattr(self.call, "lower"):
      return state
    _, _, inputs = self.feed(step, total)
    self.programs = Programs(self.call)
    for dataset in self.feed.datasets_in_order(step, len(data)):
      self.programs.submit(dataset, (state, self.carry, data[dataset],
                                     *inputs, self.halted))
    return state

  def close(self):
    if self.programs is not None:
      self.programs.close()

  def saved_carry(self):
    """The carry a checkpoint holds (None: a stateless run)."""
    return self.carry.carry if isinstance(self.carry, StreamCarry) else None

  def compiles(self) -> int:
    return compiles_of(self.call)


class Loop:
  """What the hooks see and change: the state, the step, the calls whose
  metrics are not yet logged (``pending``), the stats; ``settle``,
  ``write_row``, ``save`` and ``stop`` for them."""

  def __init__(self, state, step_fn, hooks, epochs: int,
               metrics_log: Optional[MetricsLog],
               clock: Callable[[], float] = time.monotonic):
    self.state, self.step_fn, self.hooks = state, step_fn, list(hooks)
    self.spe = step_fn.steps_per_epoch
    self.total = self.spe * epochs
    self.step = self.step_start = int(self.state.step)
    self.metrics_log, self.checkpointer = metrics_log, None
    self.stats, self.pending, self.row = FitStats(), [], {}
    self.last_call = None                  # (metrics_K, k, step before)
    self.save_fields: dict = {}            # more for every checkpoint
    self.epoch_end = self.at_end = self.stopped = False
    self.t_start = time.perf_counter()
    self.t_first = self.t_steady = None
    self.compiles = compile_time.Since()
    self.pace = Pace(clock, self.compiles)   # steady step and eval seconds

  def next_boundary(self) -> int:
    ends = [(self.step // self.spe + 1) * self.spe, self.total]
    ends += [b for b in (h.next_boundary(self) for h in self.hooks)
             if b is not None]
    return min(ends)

  def run_call(self, data):
    """One train call up to the next boundary."""
    if self.t_first is None:
      self.t_first = time.perf_counter()
    limit, before = self.next_boundary(), self.step
    with compile_time.phase("train"):
      self.state, k, metrics_K = self.step_fn(self.state, data, before,
                                              limit)
    first = self.stats.steps_run == 0
    self.record(k, metrics_K, before)
    if first:
      logging.info("First call: %d step(s) in %.2f s (%d train program(s) "
                   "compiled so far, %.2f s).", k,
                   self.stats.first_call_seconds,
                   self.compiles.count("train"),
                   self.compiles.seconds("train"))

  def record(self, k: int, metrics_K, before: int):
    """A call of ``k`` steps from ``before`` has run."""
    self.last_call, self.row = (metrics_K, k, before), {}
    self.pending.append((metrics_K, k))
    if self.stats.steps_run == 0:
      jax.block_until_ready(self.state.step)
      self.stats.first_call_seconds = time.perf_counter() - self.t_first
      self.t_steady = time.perf_counter()
    else:
      self.stats.steady_steps += k
    self.stats.steps_run += k
    self.pace.steps += k
    self.step += k
    self.epoch_end = self.step % self.spe == 0
    self.at_end = self.step == self.total

  def settle(self):
    for hook in self.hooks:
      hook.settle(self)

  def write(self, row: dict):
    if self.metrics_log:
      self.metrics_log.write(row)

  def write_row(self, pending, **fields) -> dict:
    """The mean metrics of ``pending`` and ``fields``, written as a row."""
    row = reduce_rows(pending)
    row.update(step=fields.pop("step", self.step),
               epoch=fields.pop("epoch", self.step / self.spe), **fields)
    self.write(row)
    return row

  def save(self):
    if self.checkpointer is not None:
      self.checkpointer.save(self.state, carry=self.step_fn.saved_carry(),
                             **self.save_fields)

  def stop(self):
    self.stopped = True

  def finish(self):
    jax.block_until_ready(self.state.params)
    end = time.perf_counter()
    self.stats.train_seconds = end - self.t_start
    if self.stats.steps_run > 0 and self.stats.steady_steps:
      self.stats.steady_seconds = end - self.t_steady
    self.stats.final_carry = self.step_fn.saved_carry()
    self.stats.compiles = self.step_fn.compiles()
    self.stats.compile = self.compiles.fields()
    if hasattr(self.step_fn, "close"):
      self.step_fn.close()


def fit(state, data, step, hooks: Sequence, *, epochs: int = 1,
        metrics_log: Optional[MetricsLog] = None,
        clock: Callable[[], float] = time.monotonic) -> tuple:
  """Trains ``state`` from its step to ``epochs`` epochs with ``step`` (a
  ``TrainCall``), the ``hooks`` acting after each call ->
  (state, ``FitStats``). ``clock`` times the steady pace (``loop.pace``)."""
  loop = Loop(state, step, hooks, epochs, metrics_log, clock)
  for hook in loop.hooks:
    hook.begin(loop)
  logging.info("Training %d steps (%d per epoch, batch %d) from step %d.",
               loop.total, loop.spe, step.schedule.batch_size, loop.step)
  if isinstance(data, (list, tuple)):
    logging.info("Compiling the train program for %d length buckets ...",
                 len(data))
    loop.t_first = time.perf_counter()  # the warm-up's compiles count
    with compile_time.phase("train"):
      loop.state = step.warm_up(loop.state, data, loop.step, loop.total)
  else:
    logging.info("Compiling the train program (the first call) ...")
  while loop.step < loop.total and not loop.stopped:
    loop.run_call(data)
    for hook in loop.hooks:
      hook.after_call(loop)
      if loop.stopped:
        break
  loop.finish()
  for hook in loop.hooks:
    hook.end(loop)
  return loop.state, loop.stats
