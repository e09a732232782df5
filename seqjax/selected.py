"""The model a run hands back: the selected epoch's state, its parameters'
moving average, and the selection settings a task can honour.

With a select metric and keep-best, the best epoch's state (from
``<workdir>/best``, ``seqjax.best_checkpoint``); else the latest. With an EMA
decay, that state's moving average of the parameters (saved with its
checkpoint).
"""

from __future__ import annotations

from typing import Optional

from absl import logging

from seqjax import selection as selection_lib
from seqjax import train as train_lib
from seqjax.best_checkpoint import BestCheckpoint
from seqjax.checkpoint import Checkpointer
from seqjax.summary import params_fingerprint


def selection_errors(config, select_metric: Optional[str], task: str
                     ) -> list[str]:
  """The selection flags a task without a select metric cannot honour."""
  if select_metric is not None:
    return []
  wanted = [f for f, on in (
      ("--keep_best", getattr(config, "keep_best", None)),
      (f"--patience={getattr(config, 'patience', 0)}",
       getattr(config, "patience", 0) > 0),
      ("--lr_schedule=plateau",
       getattr(config, "lr_schedule", "constant") == "plateau")) if on]
  who = f"task {task}" if task else "this run"
  return [f"{flag}: {who} selects by no held-out metric (no "
          "Setup.select_metric)" for flag in wanted]


def keeps_best(config, select_metric: Optional[str]) -> bool:
  """--keep_best, whose default is on when the task selects by a metric."""
  keep = getattr(config, "keep_best", None)
  return select_metric is not None if keep is None else bool(keep)


def keep_best_n(config) -> int:
  """--keep_best_n: how many of the best epochs' states are kept."""
  return getattr(config, "keep_best_n", 1)


def selected_state(workdir: str, model_config: dict, config, setup, state,
                   stats: train_lib.FitStats):
  """-> (the state to evaluate, its results.json keys): with a select
  metric and --keep_best the best epoch's state (from ``<workdir>/best``),
  else ``state``, the latest."""
  if setup.select_metric is None or stats.selection is None:
    return state, {}
  tracker = selection_lib.Tracker.from_json(
      stats.selection, setup.select_metric, setup.select_maximize)
  chosen, step = state, int(state.step)
  if (keeps_best(config, setup.select_metric) and
      tracker.best_step is not None and tracker.best_step != step):
    best = BestCheckpoint(workdir, model_config, keep_best_n(config))
    restored = best.restore(state, tracker.best_step)
    best.close()
    if restored is None:
      logging.warning("The best checkpoint (step %d) is not in %s; "
                      "evaluating the latest state (step %d).",
                      tracker.best_step, workdir, step)
    else:
      chosen, step = restored, tracker.best_step
  if tracker.last_step is None:  # a checkpoint without a selection record
    return state, {**unselected(workdir, state),
                   "select_metric": tracker.metric, "select_value": None,
                   "stopped_early": stats.stopped_early,
                   "stopped_epoch": stats.stopped_epoch}
  epoch, value = None, None
  if step == tracker.best_step:
    epoch, value = tracker.best_epoch, tracker.best
  elif step == tracker.last_step:
    epoch, value = tracker.last_epoch, tracker.last
  print(f"Selected the state of epoch {epoch} (step {step}; "
        f"{tracker.metric} {value}): parameters sha256 "
        f"{params_fingerprint(chosen.params)}")
  return chosen, {"select_metric": tracker.metric, "selected_step": step,
                  "selected_epoch": epoch, "select_value": value,
                  "stopped_early": stats.stopped_early,
                  "stopped_epoch": stats.stopped_epoch}


def unselected(workdir: str, state) -> dict:
  """Prints what is evaluated where no epoch was selected (an averaged
  checkpoint, or one saved without a selection record); -> its
  results.json keys."""
  from seqjax import averaging
  what = averaging.describe(workdir) or (
      f"the checkpoint at step {int(state.step)} (no selection record)")
  print(f"Evaluating {what}: parameters sha256 "
        f"{params_fingerprint(state.params)}")
  return {"selected_step": int(state.step), "selected_epoch": None,
          "evaluated": what}


def saved_ema(workdir: str, model_config: dict, state, config):
  """With --ema_decay: the moving average saved with the checkpoint of
  ``state``'s step, placed as its parameters; None without one (the
  average then starts from the parameters resumed)."""
  if not getattr(config, "ema_decay", 0):
    return None
  step = int(state.step)
  # A manager of its own: one that restored the whole state reads no part.
  checkpointer = Checkpointer(workdir, model_config)
  try:
    if not checkpointer.has_ema(step):
      return None
    return checkpointer.restore_params(state.params, step, key="ema")
  finally:
    checkpointer.close()


def ema_state(workdir: str, model_config: dict, config, state):
  """With --ema_decay, the model a run hands back and evaluates is the
  moving average of the parameters at the selected step: -> (``state``
  with it, the results.json keys); without, (``state``, {})."""
  decay = getattr(config, "ema_decay", 0)
  if not decay:
    return state, {}
  step, ema = int(state.step), None
  for subdir in ("checkpoints", "best"):
    checkpointer = Checkpointer(workdir, model_config, max_to_keep=None,
                                subdir=subdir)
    if step in checkpointer.all_steps() and checkpointer.has_ema(step):
      ema = checkpointer.restore_params(state.params, step, key="ema")
    checkpointer.close()
    if ema is not None:
      break
  if ema is None:
    logging.warning("--ema_decay=%s: no moving average saved at step %d in "
                    "%s; evaluating the parameters themselves.", decay, step,
                    workdir)
    return state, {"evaluated_params": "params"}
  print(f"Evaluating the moving average of the parameters at step {step} "
        f"(--ema_decay={decay}): sha256 {params_fingerprint(ema)}")
  return state.replace(params=ema), {"evaluated_params": "ema"}
