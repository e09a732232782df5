"""``fit`` as every task calls it: a ``FitConfig`` turned into the hooks of
the one loop (``loop.fit``) and its train call."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax

from seqjax import selection as selection_lib
from seqjax import sharding as sharding_lib
from seqjax.errors import ParameterError, SeqjaxError
from seqjax.training import ema as ema_lib
from seqjax.training import hooks as hooks_lib
from seqjax.training import loop as loop_lib
from seqjax.training.optimizers import (LR_SCHEDULES, TrainState,
                                        learning_rate_of)
from seqjax.training.records import FitConfig, FitStats, MetricsLog
from seqjax.training.schedules import BucketPlan, make_schedule
from seqjax.training.steps import StreamCarry, make_multi_step


def standard_hooks(config: FitConfig, *, checkpointer=None,
                   epoch_end_fn=None, tracker=None, best_checkpoint=None,
                   should_stop=None, clock=time.monotonic,
                   ema_params=None) -> list:
  """The hooks ``config`` asks for, in the order they act after a call:
  the non-finite monitor, log, progress bar, evaluation and selection,
  the parameters' moving average (from ``ema_params`` where given),
  checkpoint, keep-best, patience, time budget, interrupt."""
  selection = None if tracker is None else hooks_lib.Selection(
      tracker, config.lr_schedule == "plateau", config.lr_patience,
      config.lr_decay_factor)
  wanted = [
      (config.nonfinite != "ignore",
       lambda: hooks_lib.NonFinite(config.nonfinite == "stop")),
      (True, lambda: hooks_lib.Log(config.log_every_steps, config.batch_size,
                                   config.log_learning_rate,
                                   lines=config.progress == "log",
                                   every_secs=config.log_every_secs,
                                   clock=clock)),
      (config.progress == "bar", hooks_lib.Progress),
      (epoch_end_fn is not None or selection is not None,
       lambda: hooks_lib.EpochEval(epoch_end_fn, selection)),
      (config.ema_decay > 0, lambda: ema_lib.EMA(config.ema_decay,
                                                 epoch_end_fn, ema_params)),
      (checkpointer is not None, lambda: hooks_lib.Checkpoint(
          checkpointer, config.checkpoint_every_steps,
          config.checkpoint_every_secs, clock)),
      (best_checkpoint is not None,
       lambda: hooks_lib.KeepBest(selection, best_checkpoint)),
      (selection is not None and config.patience > 0,
       lambda: hooks_lib.Patience(selection, config.patience)),
      (bool(config.time_budget_secs),
       lambda: hooks_lib.TimeBudget(config.time_budget_secs, clock)),
      (should_stop is not None, lambda: hooks_lib.Interrupt(should_stop)),
  ]
  return [make() for on, make in wanted if on]


def fit(state: TrainState, data, loss_fn, config: FitConfig, *,
        checkpointer=None, metrics_log: Optional[MetricsLog] = None,
        epoch_end_fn: Optional[Callable[[TrainState, int], dict]] = None,
        multi_step=None, initial_carry=None, carry=None, reset_every: int = 0,
        mesh=None, should_stop: Optional[Callable[[], bool]] = None,
        batch_plan: Optional[BucketPlan] = None,
        clock: Callable[[], float] = time.monotonic,
        selection: Optional[selection_lib.Tracker] = None,
        best_checkpoint=None, hooks: Sequence = (), ema_params=None,
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
  ``hooks``: more periodic actions (``seqjax.training.hooks``), after these.
  ``config.ema_decay`` > 0: a moving average of the parameters
  (``training.ema``), saved with every checkpoint, resumed from
  ``ema_params`` (a checkpoint's) where given; the last in
  ``stats.ema_params``.
  A log line (steps/s, loss, ETA) comes every ``log_every_steps`` and every
  ``log_every_secs`` (on ``clock``; to the log where INFO shows, else to
  stderr), the latter off when ``hooks`` has a ``Log`` or ``Progress`` of
  its own. The ETA leaves compiles out and honours ``time_budget_secs``.

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
  ``best_checkpoint`` (``seqjax.best_checkpoint.BestCheckpoint``), an epoch that
  improved is saved there too; ``config.patience`` > 0 stops after that many
  epochs in a row without a gain (``stats.stopped_early``), a run resumed
  after such a stop at once; ``lr_schedule="plateau"`` multiplies the
  learning rate in the optimizer state by ``lr_decay_factor`` after
  ``lr_patience`` epochs without a gain. At an epoch end the evaluation and
  the selection come first, then the checkpoint, which so holds both.
  """
  tracker = selection_tracker(state, config, selection, best_checkpoint)
  stateful = initial_carry is not None
  schedule = make_schedule(data, config, batch_plan, stateful, reset_every)
  done = nothing_to_train(state, config, schedule.steps_per_epoch, tracker)
  if done is not None:
    done.ema_params = ema_params
    return state, done
  call = multi_step or make_multi_step(loss_fn, config.nonfinite, mesh)
  carry = (StreamCarry(initial_carry if carry is None else carry,
                       initial_carry) if stateful else ())
  state, data = _place(state, data, mesh, config.batch_size, stateful)
  step = loop_lib.TrainCall(call, schedule, config.seed,
                            config.steps_per_call, mesh, carry)
  if any(isinstance(h, (hooks_lib.Log, hooks_lib.Progress)) for h in hooks):
    config = dataclasses.replace(config, log_every_secs=0.0)  # theirs report
  all_hooks = standard_hooks(
      config, checkpointer=checkpointer, epoch_end_fn=epoch_end_fn,
      tracker=tracker, best_checkpoint=best_checkpoint,
      should_stop=should_stop, clock=clock, ema_params=ema_params
  ) + list(hooks)
  return loop_lib.fit(state, data, step, all_hooks, epochs=config.epochs,
                      metrics_log=metrics_log, clock=clock)


def nothing_to_train(state, config, spe, tracker) -> Optional[FitStats]:
  """The stats of a run already done (patience spent, or all its epochs
  trained); None when there is training to do."""
  if tracker is not None and tracker.exhausted(config.patience):
    logging.info("Stopped early after epoch %d (%s had not improved for %d "
                 "epochs); nothing to train.", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs)
    return FitStats(selection=tracker.to_json(), stopped_early=True,
                    stopped_epoch=tracker.last_epoch)
  if int(state.step) >= spe * config.epochs:
    logging.info("Checkpoint at step %d already covers %d epoch(s); nothing "
                 "to train.", int(state.step), config.epochs)
    return FitStats(selection=tracker and tracker.to_json())
  return None
def selection_tracker(state, config: FitConfig, selection, best_checkpoint):
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


