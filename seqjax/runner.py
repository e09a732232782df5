"""The one runner every task shares: check, workdir, init, summary, train or
resume, evaluate, results.json. See ``seqjax.task`` for what a task supplies.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import jax
import numpy as np

from seqjax import limits
from seqjax import reliability
from seqjax import selection as selection_lib
from seqjax import sharding as sharding_lib
from seqjax import summary as summary_lib
from seqjax import tensorboard as tensorboard_lib
from seqjax import train as train_lib
from seqjax.best_checkpoint import BestCheckpoint
from seqjax.checkpoint import Checkpointer
from seqjax.config import DTYPES, TrainingConfig
from seqjax.errors import ParameterError, SeqjaxError
from seqjax.selected import (ema_state, keep_best_n, keeps_best, saved_ema,
                             selected_state, selection_errors)
from seqjax.summary import params_fingerprint
# The workdir and results files; callers name them here too.
from seqjax.workdirs import (base_results, default_workdir, files_written,  # pylint: disable=unused-import
                             latest_step, make_workdir, read_results,
                             remove_unless_checkpointed, require_checkpoint,
                             resolve_workdir, training_results,
                             write_json_atomic, write_results)


class ConfigError(SeqjaxError):
  """A config that cannot run: its messages name the flags."""

  def __init__(self, errors: list[str]):
    self.errors = list(errors)
    super().__init__("Bad flags:\n  " + "\n  ".join(self.errors))


def check(config) -> None:
  """Raises a ConfigError naming every bad flag: the declarations and the
  cross-field checks, then those that need the devices. A multi-process run
  joins its processes first, so the device checks see all their devices."""
  errors = config.validate()
  if not errors and getattr(config, "num_processes", 1) > 1:
    sharding_lib.initialize_distributed(
        config.coordinator_address, config.num_processes, config.process_id)
  if not errors and hasattr(config, "device_errors"):
    errors = config.device_errors()
  if errors:
    raise ConfigError(errors)


def run(task, config, workdir: Optional[str] = None) -> dict:
  """Trains (or resumes) ``task`` with ``config`` and evaluates the model it
  hands back; -> the results, also in ``<workdir>/results.json``."""
  check(config)
  workdir = workdir or default_workdir(config, task.name)
  if getattr(config, "eval_only", False):
    require_checkpoint(workdir)  # before the data is read or a file written
  setup = task.setup(config, workdir)  # bad data stops before any file
  errors = selection_errors(config, setup.select_metric, task.name)
  if errors:
    raise ConfigError(errors)
  make_workdir(workdir)
  model_config = checkpoint_config(setup.model_config, config)
  written = []
  if setup.save_files is not None:
    checker = Checkpointer(workdir, model_config)
    checker.check_compatible()  # a mismatch stops before anything is written
    checker.close()
    written = files_written(workdir, setup.save_files)
  try:
    params = init_params(task, setup, config.seed)
    print(summary_lib.format_summary(params, title=setup.title))
    state, stats = train_or_restore(
        model=setup.model, params=params, config=config, workdir=workdir,
        model_config=setup.model_config, data=setup.train,
        loss_fn=setup.loss_fn, epoch_end_fn=setup.epoch_end,
        fit_config=setup.fit_config, initial_carry=setup.initial_carry,
        reset_every=setup.reset_every, batch_plan=setup.batch_plan,
        select_metric=setup.select_metric,
        select_maximize=setup.select_maximize)
  except BaseException:
    remove_unless_checkpointed(workdir, written)
    raise
  results = base_results(task.name, config)
  results.update(workdir=workdir, step=int(state.step))
  state, selected = selected_state(workdir, model_config, config, setup,
                                   state, stats)
  results.update(selected)
  state, evaluated = ema_state(workdir, model_config, config, state)
  results.update(evaluated)
  results.update(task.evaluate(config, setup, state))
  results.update(training_results(stats, config.batch_size, params))
  write_results(workdir, results)
  if results.get("examples") and jax.process_index() == 0:
    with tensorboard_lib.TensorBoardLog(workdir) as tb:  # shown as text
      tb.text("examples", int(state.step),
              tensorboard_lib.examples_markdown(results["examples"]))
  return results


def checkpoint_config(model_config: dict, config) -> dict:
  """What a checkpoint must match: the task's model config, and (only when
  not the defaults, so older checkpoints still match) what changes the
  optimizer state's structure."""
  extra = {}
  schedule = getattr(config, "lr_schedule", "constant")
  if schedule != "constant":
    extra["lr_schedule"] = schedule
  if getattr(config, "clip_norm", 0) > 0:
    extra["gradient_clipping"] = True
  return {**model_config, **extra}


def init_params(task, setup, seed: int):
  """The model's parameters from ``seed``; a model too large to index (its
  shapes are counted first, nothing allocated) is refused naming the task's
  size flags."""
  init = jax.jit(setup.model.init)
  key = jax.random.key(seed)
  n = summary_lib.count_params(jax.eval_shape(init, key, *setup.init_inputs))
  if n > limits.INT32_MAX:
    flags = ", ".join(f"--{f}" for f in getattr(task, "size_flags", ()))
    raise SeqjaxError(f"the model would have {n:,} parameters, more than "
                      f"{limits.INT32_MAX:,}: lower {flags or 'its sizes'}")
  return init(key, *setup.init_inputs)


def train_or_restore(*, model, params, config: TrainingConfig, workdir: str,
                     model_config: dict, data: dict[str, np.ndarray],
                     loss_fn: train_lib.LossFn,
                     epoch_end_fn: Optional[Callable] = None,
                     fit_config: Optional[train_lib.FitConfig] = None,
                     initial_carry=None, reset_every: int = 0,
                     batch_plan: Optional[train_lib.BucketPlan] = None,
                     select_metric: Optional[str] = None,
                     select_maximize: bool = True,
                     ) -> tuple[train_lib.TrainState, train_lib.FitStats]:
  """Builds the train state, resumes from ``workdir`` and trains (or, with
  ``--eval_only``, only restores). A checkpoint written for another model stops
  the run before anything is written. ``initial_carry`` / ``reset_every``:
  stateful training (see ``seqjax.train.fit``): the carry is checkpointed
  with the state and resumed. With ``batch_plan``, ``data``
  is a list of datasets (length buckets; see ``train.fit``). Ctrl-C saves a checkpoint and
  raises ``reliability.TrainingInterrupted``; a damaged checkpoint is
  skipped.

  ``select_metric`` (a key of ``epoch_end_fn``'s dict; ``select_maximize``):
  model selection (``train.fit``), its record resumed from the checkpoint,
  the best epoch's state kept in ``<workdir>/best`` with --keep_best (on by
  default then), --patience and --lr_schedule=plateau. The state returned is
  the latest; ``stats.selection`` is the record (``selected_state`` reads
  the best state)."""
  dtype = getattr(config, "dtype", "float32")
  if dtype != "float32" and getattr(model, "dtype", None) != DTYPES[dtype]:
    # A task must pass config.compute_dtype() to its model; never ignore it.
    raise ParameterError("dtype", dtype, f"this task's model "
                         f"({type(model).__name__}) does not compute in it")
  return _train_or_restore_locked(
      model=model, params=params, config=config, workdir=workdir,
      model_config=model_config, data=data, loss_fn=loss_fn,
      epoch_end_fn=epoch_end_fn, fit_config=fit_config,
      initial_carry=initial_carry, reset_every=reset_every,
      batch_plan=batch_plan, select_metric=select_metric,
      select_maximize=select_maximize)


@reliability.exclusive_workdir  # one run per workdir; see reliability.py
def _train_or_restore_locked(*, model, params, config, workdir, model_config,
                              data, loss_fn, epoch_end_fn, fit_config,
                              initial_carry, reset_every, batch_plan,
                              select_metric, select_maximize):
  errors = selection_errors(config, select_metric, "")
  if errors:
    raise ConfigError(errors)
  model_config = checkpoint_config(model_config, config)
  checkpointer = Checkpointer(workdir, model_config)
  latest = checkpointer.check_compatible()
  fit_config = fit_config or config.fit_config()
  if select_metric is not None:
    fit_config = dataclasses.replace(fit_config, select_metric=select_metric,
                                     select_maximize=select_maximize)
  tx = make_tx(config, fit_config, data, batch_plan,
               initial_carry is not None, reset_every)
  state = train_lib.create_train_state(model, params, tx)
  num_devices = getattr(config, "num_devices", 1)
  if initial_carry is not None and num_devices == 0:
    num_devices = 1  # stateful streams run on one device (seqjax.train.fit)
  mesh = sharding_lib.mesh_or_none(num_devices)
  if mesh is not None:
    # Restored arrays take the target's sharding: replicated on the mesh.
    state = sharding_lib.replicate(state, mesh)
  carry, ema = initial_carry, None
  if latest is not None:
    state, carry = checkpointer.restore_with_carry(state, initial_carry,
                                                   latest)
    print(f"Resumed from the checkpoint at step {int(state.step)} in "
          f"{workdir}.")
    ema = saved_ema(workdir, model_config, state, config)
  tracker = None
  if select_metric is not None:
    tracker = selection_lib.Tracker.from_json(
        checkpointer.saved_selection(int(state.step)) if latest is not None
        else None, select_metric, select_maximize)
  if config.eval_only:
    if latest is None:
      require_checkpoint(workdir)
    return sharding_lib.local_copy(state), eval_only_stats(
        tracker, fit_config, data, batch_plan, initial_carry is not None,
        reset_every, int(state.step))
  best = None
  if tracker is not None and keeps_best(config, select_metric):
    best = BestCheckpoint(workdir, model_config, keep_best_n(config))
    if tracker.best_step == int(state.step) and best.step() != int(state.step):
      best.save(state, tracker, ema)  # killed between latest and best saves
  if mesh is not None and epoch_end_fn is not None:
    # Evaluation code is written for one device: hand it a local copy.
    user_epoch_end_fn = epoch_end_fn
    epoch_end_fn = lambda s, e: user_epoch_end_fn(sharding_lib.local_copy(s), e)
  reliability.check_fit_size(fit_config, data)
  metrics_log = open_logs(workdir, int(state.step), config)
  with reliability.InterruptGuard() as interrupt, metrics_log:
    try:
      state, stats = train_lib.fit(
          state, data, loss_fn, fit_config,
          checkpointer=checkpointer, metrics_log=metrics_log,
          epoch_end_fn=epoch_end_fn, initial_carry=initial_carry,
          carry=carry, reset_every=reset_every, mesh=mesh,
          should_stop=interrupt.requested, batch_plan=batch_plan,
          selection=tracker, best_checkpoint=best, ema_params=ema)
    except reliability.NonFiniteError as e:
      raise reliability.NonFiniteError(f"{e} {_step_size_flags(config)}"
                                       ) from e
  checkpointer.save(state, carry=stats.final_carry,
                    selection=stats.selection, ema=stats.ema_params)
  checkpointer.close()
  if best is not None:
    best.close()
  if interrupt.requested():
    raise reliability.TrainingInterrupted(int(state.step), workdir,
                                          interrupt.signum)
  state = sharding_lib.local_copy(state)
  prefix = (f"[process {jax.process_index()}/{jax.process_count()}] "
            if jax.process_count() > 1 else "")
  print(f"{prefix}Parameters at step {int(state.step)}: sha256 "
        f"{params_fingerprint(state.params)}")
  return state, stats


def _step_size_flags(config) -> str:
  """The flags that set the size of an update, for a non-finite step."""
  lr = (config.learning_rate if config.learning_rate is not None else
        train_lib.DEFAULT_LEARNING_RATES.get(config.optimizer))
  clip = getattr(config, "clip_norm", 0.0)
  return (f"(Flags: --optimizer={config.optimizer} --learning_rate={lr} "
          f"--clip_norm={clip}; --skip_nonfinite_updates skips such steps.)")


def eval_only_stats(tracker, fit_config, data, batch_plan, stateful: bool,
                    reset_every: int, step: int) -> train_lib.FitStats:
  """--eval_only's stats: no training, the checkpoint's selection record
  and whether patience had ended its run before --epochs."""
  if tracker is None:
    return train_lib.FitStats()
  spe = train_lib.make_schedule(data, fit_config, batch_plan, stateful,
                                reset_every).steps_per_epoch
  stopped = (tracker.exhausted(fit_config.patience) and
             step < spe * fit_config.epochs)
  return train_lib.FitStats(selection=tracker.to_json(), stopped_early=stopped,
                            stopped_epoch=tracker.last_epoch if stopped
                            else None)


def make_tx(config, fit_config: train_lib.FitConfig, data, batch_plan,
            stateful: bool, reset_every: int):
  """The optimizer of the flags: --optimizer, --learning_rate, --clip_norm,
  --lr_schedule (warmup_decay decays over all the run's steps)."""
  schedule = getattr(config, "lr_schedule", "constant")
  total = 0
  if schedule == "warmup_decay":
    total = train_lib.make_schedule(data, fit_config, batch_plan, stateful,
                                    reset_every).steps_per_epoch
    total *= fit_config.epochs
  return train_lib.make_optimizer(
      config.optimizer, config.learning_rate, schedule=schedule,
      clip_norm=getattr(config, "clip_norm", 0.0),
      warmup_steps=getattr(config, "warmup_steps", 0), total_steps=total)


def open_logs(workdir: str, step: int, config) -> train_lib.MetricsLog:
  """metrics.jsonl trimmed to ``step`` (a resume trains the later steps
  again) and ``tb/`` rebuilt to agree with it, the run's flags as its text.
  Only process 0 writes: the others get a log that writes nothing."""
  if jax.process_index() != 0:
    return train_lib.MetricsLog(None)
  path = os.path.join(workdir, "metrics.jsonl")
  reliability.prepare_resume(path, step)
  tb = tensorboard_lib.TensorBoardLog.resume(workdir, step)
  # At each (re)start: a resume may change flags that keep the model.
  tb.text("flags", step, tensorboard_lib.flags_markdown(
      dataclasses.asdict(config)))
  return train_lib.MetricsLog(path, sinks=(tb,))
