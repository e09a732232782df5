"""What a fit is told (``FitConfig``), what it hands back (``FitStats``) and
where its metrics rows go (``MetricsLog``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Optional

from absl import logging
import jax
import numpy as np

from seqjax import reliability


@dataclasses.dataclass
class FitConfig:
  batch_size: int
  epochs: int = 1
  seed: int = 0
  shuffle: bool = True
  steps_per_call: int = 25
  log_every_steps: int = 500
  # Also a log line (steps/s, loss, ETA) when this long since the last one,
  # the metrics read one call late (no wait for the device); 0: off.
  log_every_secs: float = 30.0
  checkpoint_every_steps: int = 0   # 0: at each epoch end only
  # Only written to the metrics rows (the optimizer holds the real one): a
  # number, or a function of the step (a schedule).
  log_learning_rate: Optional[Any] = None
  checkpoint_every_secs: float = 0.0  # also save when this long since the last
  nonfinite: str = "ignore"         # see NONFINITE_MODES
  # "log": a log line per metrics row; "bar": a live bar per epoch on stdout
  # (seqjax.progress) instead; "none": neither.
  progress: str = "log"
  # Model selection (seqjax.selection): the key of epoch_end_fn's dict that
  # selects, and whether higher is better. With it, each epoch's value is
  # tracked and saved with the checkpoints; fit(best_checkpoint=) keeps the
  # best epoch's state.
  select_metric: Optional[str] = None
  select_maximize: bool = True
  patience: int = 0                 # stop after so many epochs without a gain
  # "plateau": multiply the learning rate (in the optimizer state, see
  # make_optimizer) by lr_decay_factor after lr_patience epochs without a
  # gain; other schedules live in the optimizer alone.
  lr_schedule: str = "constant"
  lr_patience: int = 2
  lr_decay_factor: float = 0.5
  # Stop at an epoch end when another epoch as long as the last (less its
  # compiles) would pass this many seconds of training (0: no budget).
  time_budget_secs: float = 0.0
  # An exponential moving average of the parameters, evaluated by
  # epoch_end_fn at epoch ends (seqjax.training.ema); 0: none.
  ema_decay: float = 0.0


@dataclasses.dataclass
class FitStats:
  steps_run: int = 0
  train_seconds: float = 0.0        # all training calls, compile included
  first_call_seconds: float = 0.0   # the first call (compile + K steps)
  steady_seconds: float = 0.0       # the calls after the first
  steady_steps: int = 0
  compiles: int = 0                 # of the train call, during this fit
  # All compiles during this fit (compile_time.Since.fields): compile_seconds,
  # compiles, and both per kind (train, eval, decode, other).
  compile: dict = dataclasses.field(default_factory=dict)
  last_metrics: dict = dataclasses.field(default_factory=dict)
  final_carry: Any = None          # stateful fit: the carry after the last step
  nonfinite_skipped: int = 0        # steps skipped (FitConfig.nonfinite="skip")
  interrupted: bool = False         # should_stop() ended the run early
  # Model selection: the tracker's record (Tracker.to_json) after the last
  # epoch, and whether patience ended the run (after epoch stopped_epoch).
  selection: Optional[dict] = None
  stopped_early: bool = False
  stopped_epoch: Optional[int] = None
  stopped_on_budget: bool = False   # the time budget ended the run
  ema_params: Any = None            # the EMA hook's average at the end

  def samples_per_second(self, batch_size: int) -> float:
    if self.steady_steps and self.steady_seconds > 0:
      return self.steady_steps * batch_size / self.steady_seconds
    if self.train_seconds > 0:
      return self.steps_run * batch_size / self.train_seconds
    return 0.0


class MetricsLog:
  """Appends rows to ``<workdir>/metrics.jsonl`` (one JSON object a line),
  the record a resume trims, and hands each row to ``sinks`` (say a
  ``seqjax.tensorboard.TensorBoardLog``) after it is written."""

  def __init__(self, path: Optional[str], sinks: tuple = ()):
    self.path, self.sinks = path, tuple(sinks)

  def write(self, row: dict):
    if self.path is None:
      return
    # One whole line per write(2), fsynced: a crash never leaves half a row.
    reliability.append_line(self.path, json.dumps(row))
    for sink in self.sinks:
      sink.write(row)

  def close(self):
    for sink in self.sinks:
      sink.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def report(line: str) -> None:
  """A progress line: to the log where INFO shows (the binaries), else to
  stderr (a script that never set up logging)."""
  if logging.level_info():
    logging.info("%s", line)
  else:
    print(line, file=sys.stderr, flush=True)


def reduce_rows(pending) -> dict:
  """Mean of each metric over the valid, finite steps of the pending calls
  ((metrics_K, k) each); with the guard's flags, also the steps skipped."""
  sums, count, skipped, guarded = {}, 0, 0, False
  for metrics_K, k in pending:
    host = dict(jax.device_get(metrics_K))
    guarded = guarded or "nonfinite" in host
    bad_K = np.asarray(host.pop("nonfinite", np.zeros(k)))[:k] > 0
    for name, values in host.items():
      sums[name] = sums.get(name, 0.0) + float(
          np.asarray(values)[:k][~bad_K].sum())
    count += int((~bad_K).sum())
    skipped += int(bad_K.sum())
  # No finite step in the window: NaN, not a misleading 0.
  row = {name: total / count if count else float("nan")
         for name, total in sums.items()}
  if guarded:
    row["nonfinite_skipped"] = skipped
  return row


def save_last_good(loop, good: int) -> str:
  """Saves a loop's last good state (step ``good``, when it trained past
  where it started) -> the sentence saying which checkpoint is kept."""
  if loop.checkpointer is None:
    return ""
  if good > loop.step_start:
    loop.save()
  last = loop.checkpointer.latest_step()
  return (f" The last good checkpoint (step {last}) in "
          f"{loop.checkpointer.directory} is kept; nothing non-finite was "
          "saved." if last is not None else " Nothing was saved.")


def nonfinite_what(loss: float, grad_norm: float) -> str:
  """What was not finite, for the message of a stopped run."""
  if not np.isfinite(loss):
    return f"loss {loss}"
  if not np.isfinite(grad_norm):
    return f"gradient norm {grad_norm} (loss {loss})"
  return f"parameters after the update (loss {loss})"
