"""The fit loop: the train call, a schedule and the periodic actions."""

from __future__ import annotations

import time
from typing import Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import progress as progress_lib
from seqjax import reliability
from seqjax import selection as selection_lib
from seqjax import sharding as sharding_lib
from seqjax.errors import ParameterError, SeqjaxError
from seqjax.training.optimizers import (LR_SCHEDULES, TrainState,
                                        learning_rate_of, with_learning_rate)
from seqjax.training.records import (FitConfig, FitStats, MetricsLog,
                                     nonfinite_what, reduce_rows,
                                     save_last_good)
from seqjax.training.schedules import BucketPlan, Feed, make_schedule
from seqjax.training.steps import StreamCarry, compiles_of, make_multi_step


class _Loop:
  """The mutable part of one ``fit``: state and carry, the step, the calls
  whose metrics are not yet logged (``pending``) or whose non-finite flags
  are not yet read (``unchecked``), and the periodic actions on them."""

  def __init__(self, state, carry, config, spe, checkpointer, metrics_log,
               clock, mesh, tracker=None, best_checkpoint=None):
    self.state, self.carry, self.config, self.spe = state, carry, config, spe
    # Model selection: the tracker's record goes into every checkpoint; the
    # best epoch's state into best_checkpoint (see seqjax.selection).
    self.tracker, self.best_checkpoint = tracker, best_checkpoint
    self.total = spe * config.epochs
    self.step = self.step_start = int(state.step)
    self.checkpointer, self.metrics_log = checkpointer, metrics_log
    self.clock, self.stats = clock, FitStats()
    self.guarded = config.nonfinite != "ignore"
    self.pending, self.unchecked = [], None  # unchecked: (metrics_K, k, step)
    self.halted = (jnp.zeros((), bool) if mesh is None else
                   sharding_lib.replicate(np.zeros((), bool), mesh))
    self.t_start = self.t_log = time.perf_counter()
    self.t_first = self.t_steady = None
    self.step_log, self.t_ckpt = self.step, clock()
    self.t_fit = self.t_epoch = clock()   # the time budget's clock

  def next_boundary(self) -> int:
    """The first epoch end, log, checkpoint step or the end after ``step``."""
    ends = [(self.step // self.spe + 1) * self.spe, self.total]
    for every in (self.config.log_every_steps,
                  self.checkpointer and self.config.checkpoint_every_steps):
      if every:
        ends.append((self.step // every + 1) * every)
    return min(ends)

  def dispatch(self, train_call, data, k, inputs):
    """Runs one call; reads the previous call's flags while this one runs."""
    if self.t_first is None:
      self.t_first = time.perf_counter()
    self.state, self.carry, self.halted, metrics_K = train_call(
        self.state, self.carry, data, *inputs, self.halted)
    if self.guarded:
      self.monitor()
      self.unchecked = (metrics_K, k, self.step)
    self.pending.append((metrics_K, k))
    if self.stats.steps_run == 0:
      jax.block_until_ready(self.state.step)
      self.stats.first_call_seconds = time.perf_counter() - self.t_first
      self.t_steady = time.perf_counter()
    else:
      self.stats.steady_steps += k
    self.stats.steps_run += k
    self.step += k

  def monitor(self):
    """The non-finite monitor: reads the unchecked call's flags; with "stop"
    a bad step ends the run (``_stop_nonfinite``)."""
    if self.unchecked is None:
      return
    metrics_K, k, step_before = self.unchecked
    self.unchecked = None
    bad_K = np.asarray(metrics_K["nonfinite"])[:k] > 0
    if self.config.nonfinite == "stop" and bad_K.any():
      self._stop_nonfinite(metrics_K, int(np.argmax(bad_K)), step_before)
    self.stats.nonfinite_skipped += int(bad_K.sum())

  def due(self) -> tuple[bool, bool, bool]:
    """-> (log, checkpoint, epoch end) after this call."""
    cfg, step, end = self.config, self.step, self.step == self.total
    epoch_end = step % self.spe == 0
    log = bool(cfg.log_every_steps and step % cfg.log_every_steps == 0)
    ckpt = bool(cfg.checkpoint_every_steps and
                step % cfg.checkpoint_every_steps == 0)
    # A clock read, no device sync: the save itself waits for the device.
    ckpt = ckpt or bool(cfg.checkpoint_every_secs and self.clock() -
                        self.t_ckpt >= cfg.checkpoint_every_secs)
    ckpt = self.checkpointer is not None and (ckpt or epoch_end or end)
    return log or epoch_end or end, ckpt, epoch_end

  def write_row(self, pending, **fields) -> dict:
    """The one reduce-and-log: the mean metrics of ``pending`` and
    ``fields``, written to metrics.jsonl."""
    row = reduce_rows(pending)
    row.update(step=fields.pop("step", self.step),
               epoch=fields.pop("epoch", self.step / self.spe), **fields)
    if self.metrics_log:
      self.metrics_log.write(row)
    return row

  def log(self, **fields):
    now, step, total = time.perf_counter(), self.step, self.total
    rate = (step - self.step_log) / max(now - self.t_log, 1e-9)
    lr = learning_rate_of(self.state.opt_state)  # the optimizer's own, if any
    lr = self.config.log_learning_rate if lr is None else lr
    if lr is not None:
      fields["learning_rate"] = float(lr(step) if callable(lr) else lr)
    row = self.write_row(self.pending, steps_per_s=rate,
                         samples_per_s=rate * self.config.batch_size,
                         wall_s=now - self.t_start, **fields, time=time.time())
    self.pending, self.stats.last_metrics = [], row
    if self.config.progress == "log":
      logging.info("step %d/%d epoch %.2f loss %.4f token_acc %.4f "
                   "%.1f steps/s ETA %.0fs", step, total, step / self.spe,
                   row.get("loss", float("nan")),
                   row.get("token_accuracy", float("nan")), rate,
                   (total - step) / max(rate, 1e-9))
    self.t_log, self.step_log = now, step
    return row

  def save(self):
    if self.checkpointer is not None:
      self.checkpointer.save(self.state, carry=_carry_of(self.carry),
                             **self._selection_kwargs())
      self.t_ckpt = self.clock()

  def _selection_kwargs(self) -> dict:
    # Only a run that selects saves a record: others' checkpoints unchanged.
    return ({} if self.tracker is None else
            {"selection": self.tracker.to_json()})

  def evaluate(self, epoch_end_fn) -> tuple[bool, bool]:
    """Runs ``epoch_end_fn``, then the selection on its metrics; logs both.
    -> (the metric improved, patience is exhausted)."""
    epoch = self.step // self.spe
    extra = dict(epoch_end_fn(self.state, epoch) or {})
    improved, stop, fields = self.select(extra, epoch)
    if (extra or fields) and self.metrics_log:
      self.metrics_log.write({"step": self.step, "epoch": epoch,
                              "eval": True, "wall_s": time.perf_counter() -
                              self.t_start, "time": time.time(), **extra,
                              **fields})
    return improved, stop

  def select(self, extra: dict, epoch: int) -> tuple[bool, bool, dict]:
    """The tracker's update after ``epoch``, and the plateau schedule's cut:
    -> (improved, stop, fields for the metrics row)."""
    if self.tracker is None:
      return False, False, {}
    cfg, tracker = self.config, self.tracker
    improved = tracker.update(extra, self.step, epoch)
    fields = {"improved": improved, "epochs_since_best": tracker.bad_epochs}
    if (not improved and cfg.lr_schedule == "plateau" and
        tracker.plateau_due(cfg.lr_patience)):
      lr = float(learning_rate_of(self.state.opt_state)) * cfg.lr_decay_factor
      self.state = with_learning_rate(self.state, lr)
      tracker.cut()
      logging.info("%s has not improved for %d epoch(s): learning rate now "
                   "%.4g.", tracker.metric, cfg.lr_patience, lr)
    lr = learning_rate_of(self.state.opt_state)
    if lr is not None:
      fields["learning_rate"] = float(lr)
    return improved, tracker.exhausted(cfg.patience), fields

  def save_best(self):
    """The state of the best epoch so far, beside the latest ones."""
    if self.best_checkpoint is not None:
      self.best_checkpoint.save(self.state, self.tracker)

  def stop_early(self):
    tracker = self.tracker
    self.stats.stopped_early = True
    self.stats.stopped_epoch = tracker.last_epoch
    logging.info("Early stop after epoch %d: %s has not improved for %d "
                 "epochs (best %s at epoch %s).", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs, tracker.best,
                 tracker.best_epoch)

  def out_of_time(self) -> bool:
    """At an epoch end: would one more epoch like the last pass the time
    budget?"""
    now = self.clock()
    epoch_seconds, self.t_epoch = now - self.t_epoch, now
    budget = self.config.time_budget_secs
    if not budget or now - self.t_fit + epoch_seconds <= budget:
      return False
    self.stats.stopped_on_budget = True
    logging.info("Stopping at step %d: another %.0f s epoch would pass the "
                 "%.0f s training budget (%.0f s used).", self.step,
                 epoch_seconds, budget, now - self.t_fit)
    return True

  def interrupt(self):
    """``should_stop()``: logs the steps since the last row, saves, stops."""
    self.monitor()
    if self.pending:
      self.stats.last_metrics = self.write_row(self.pending, interrupted=True)
      self.pending = []
    self.save()
    self.stats.interrupted = True
    logging.warning("Stopped at step %d on request.", self.step)

  def _stop_nonfinite(self, metrics_K, j, step):
    """Step ``step + j + 1`` was not finite: the state (and carry) are the
    last good ones (step + j). Logs and saves them, then raises."""
    host = jax.device_get(metrics_K)
    bad, good = step + j + 1, step + j
    loss, grad_norm = float(host["loss"][j]), float(host["grad_norm"][j])
    # pending's last entry is this call; its steps before the bad one count.
    self.write_row(self.pending[:-1] + [(metrics_K, j)], step=good,
                   epoch=good / self.spe, nonfinite_step=bad,
                   nonfinite_loss=str(loss), nonfinite_grad_norm=str(grad_norm))
    saved = save_last_good(self, good)
    raise reliability.NonFiniteError(
        f"Non-finite {nonfinite_what(loss, grad_norm)} at step {bad} (epoch "
        f"{bad / self.spe:.2f}): the update was not applied and training "
        f"stopped.{saved} A lower learning rate, or nonfinite=\"skip\" (skip "
        "such steps), avoids this.")

  def finish(self):
    jax.block_until_ready(self.state.params)
    end = time.perf_counter()
    self.stats.train_seconds = end - self.t_start
    if self.stats.steps_run > 0 and self.stats.steady_steps:
      self.stats.steady_seconds = end - self.t_steady
    self.stats.final_carry = _carry_of(self.carry)
    if self.tracker is not None:
      self.stats.selection = self.tracker.to_json()


def _carry_of(carry):
  return carry.carry if isinstance(carry, StreamCarry) else None



def fit(state: TrainState, data, loss_fn, config: FitConfig, *,
        checkpointer=None, metrics_log: Optional[MetricsLog] = None,
        epoch_end_fn: Optional[Callable[[TrainState, int], dict]] = None,
        multi_step=None, initial_carry=None, carry=None, reset_every: int = 0,
        mesh=None, should_stop: Optional[Callable[[], bool]] = None,
        batch_plan: Optional[BucketPlan] = None,
        clock: Callable[[], float] = time.monotonic,
        selection: Optional[selection_lib.Tracker] = None,
        best_checkpoint=None,
        ) -> tuple[TrainState, FitStats]:
  """Trains ``state`` from its current step to ``epochs`` full epochs.

  ``data`` is a dict of equally long arrays; batches are rows of it, in the
  order of a schedule (``make_schedule``). Resumes from ``state.step``.
  Periodic actions after each jitted call (``multi_step``, default
  ``make_multi_step``): a metrics row every ``log_every_steps`` and at epoch
  ends; ``checkpointer.save(state, carry=)`` every ``checkpoint_every_steps``,
  when ``checkpoint_every_secs`` have passed on ``clock`` since the last
  save, at epoch ends and at the end; ``epoch_end_fn(state, epoch)`` after
  each epoch (its dict is logged); ``should_stop()``: when true, a checkpoint
  is saved at that step and fit returns with ``stats.interrupted``. With
  ``config.nonfinite="stop"`` a non-finite step raises
  ``reliability.NonFiniteError`` after saving the last good state and carry.

  Stateful training: with ``initial_carry`` (a carry pytree of batch size
  ``batch_size``), ``loss_fn(params, batch, carry) -> (loss, (metrics,
  carry))``; each step starts from the previous step's final carry, reset to
  ``initial_carry`` every ``reset_every`` steps (0: never). Batches are
  consecutive rows; shuffling permutes whole blocks of ``reset_every``
  batches. ``carry`` (default ``initial_carry``) is the carry at
  ``state.step``, as a checkpoint restores it; the last is
  ``stats.final_carry``.

  With a ``mesh`` (``seqjax.sharding.make_mesh``) each batch is split over
  its devices. With ``batch_plan`` (a ``BucketPlan``), ``data`` is a list of
  such dicts (length buckets, each with its own shapes): the step compiles
  once per dataset, all before the first step (in first_call_seconds).

  Model selection, with ``config.select_metric`` (a key of
  ``epoch_end_fn``'s dict): after each epoch a ``selection.Tracker``
  (``selection``, e.g. restored with a checkpoint; default a fresh one) reads
  the metric, and its record is saved with every checkpoint. Then, with
  ``best_checkpoint`` (``seqjax.checkpoint.BestCheckpoint``), an epoch that
  improved is saved there too; ``config.patience`` > 0 stops after that many
  epochs in a row without a gain (``stats.stopped_early``), a run resumed
  after such a stop at once; ``lr_schedule="plateau"`` multiplies the
  learning rate in the optimizer state by ``lr_decay_factor`` after
  ``lr_patience`` epochs without a gain. At an epoch end the evaluation and
  the selection come first, then the checkpoint, which so holds both.
  """
  tracker = _tracker(state, config, selection, best_checkpoint)
  stateful = initial_carry is not None
  schedule = make_schedule(data, config, batch_plan, stateful, reset_every)
  spe = schedule.steps_per_epoch
  if tracker is not None and tracker.exhausted(config.patience):
    logging.info("Stopped early after epoch %d (%s had not improved for %d "
                 "epochs); nothing to train.", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs)
    return state, FitStats(selection=tracker.to_json(), stopped_early=True,
                           stopped_epoch=tracker.last_epoch)
  if int(state.step) >= spe * config.epochs:
    logging.info("Checkpoint at step %d already covers %d epoch(s); nothing "
                 "to train.", int(state.step), config.epochs)
    return state, FitStats(selection=tracker and tracker.to_json())
  train_call = multi_step or make_multi_step(loss_fn, config.nonfinite, mesh)
  carry = (StreamCarry(initial_carry if carry is None else carry,
                       initial_carry) if stateful else ())
  state, data = _place(state, data, mesh, config.batch_size, stateful)
  loop = _Loop(state, carry, config, spe, checkpointer, metrics_log, clock,
               mesh, tracker, best_checkpoint)
  feed = Feed(schedule, config.seed, max(1, config.steps_per_call), mesh)
  logging.info("Training %d steps (%d per epoch, batch %d) from step %d.",
               loop.total, spe, config.batch_size, loop.step)
  bar = (progress_lib.Progress("bar", loop.total, spe, start_step=loop.step)
         if config.progress == "bar" else None)  # "log": loop.log's lines
  if batch_plan is not None:
    _warm_up(loop, train_call, data, feed)
  while loop.step < loop.total:
    dataset, k, inputs = feed(loop.step, loop.next_boundary())
    loop.dispatch(train_call, data if dataset is None else data[dataset], k,
                  inputs)
    log, ckpt, epoch_end = loop.due()
    if log or ckpt:
      loop.monitor()  # before anything is logged, saved or evaluated
    row = loop.log() if log else {}
    if bar is not None:  # the loss only where the host has it: log rows
      bar.update(loop.step, row.get("loss"))
    improved = stop = False
    if epoch_end and epoch_end_fn is not None:
      improved, stop = loop.evaluate(epoch_end_fn)
    if ckpt:
      loop.save()  # after the selection: the record and the LR it set
    if improved:
      loop.save_best()
    if stop and loop.step < loop.total:
      loop.stop_early()
      break
    if epoch_end and loop.step < loop.total and loop.out_of_time():
      break
    if should_stop is not None and loop.step < loop.total and should_stop():
      loop.interrupt()
      break
  loop.finish()
  if bar is not None:
    bar.close()
  loop.stats.compiles = compiles_of(train_call)  # its compiles so far
  return loop.state, loop.stats


def _tracker(state, config: FitConfig, selection, best_checkpoint):
  """The run's selection tracker (None without ``select_metric``); refuses
  the selection features without one."""
  if config.lr_schedule not in LR_SCHEDULES:
    raise ParameterError("lr_schedule", config.lr_schedule,
                         f"expected one of {', '.join(LR_SCHEDULES)}")
  if config.patience < 0:
    raise ParameterError("patience", config.patience, "must be >= 0")
  if config.select_metric is None:
    wanted = [name for name, on in (
        ("patience", config.patience > 0),
        ("lr_schedule", config.lr_schedule == "plateau"),
        ("best_checkpoint", best_checkpoint is not None)) if on]
    if wanted:
      raise ValueError(f"{', '.join(wanted)}: model selection needs "
                       "FitConfig.select_metric")
    return None
  if (config.lr_schedule == "plateau" and
      learning_rate_of(state.opt_state) is None):
    raise ValueError("lr_schedule='plateau' needs the learning rate in the "
                     "optimizer state: make_optimizer(schedule='plateau')")
  if selection is not None:
    return selection
  return selection_lib.Tracker(config.select_metric, config.select_maximize)


def _place(state, data, mesh, batch_size, stateful):
  """State and data on the device, or replicated on the mesh."""
  if mesh is None:
    return state, jax.device_put(data)
  if stateful:
    raise SeqjaxError(f"stateful training runs on one device; the mesh has "
                      f"{mesh.size}")
  sharding_lib.check_batch_size(batch_size, mesh)
  return sharding_lib.replicate(state, mesh), sharding_lib.replicate(data, mesh)


def _warm_up(loop, train_call, data, feed):
  """Compiles the train call for every dataset's shapes, with all K steps
  skipped (the state comes back unchanged): no compile falls inside the
  epoch, and first_call_seconds counts them all."""
  loop.t_first = time.perf_counter()
  _, _, (idx, _, reset) = feed(loop.step, loop.total)
  none_valid = feed.place(idx, np.zeros(feed.k_max, bool), reset)
  for dataset in data:
    loop.state, loop.carry, _, _ = train_call(
        loop.state, loop.carry, dataset, *none_valid, loop.halted)
