"""The periodic actions of ``loop.fit``, one object each.

A hook may define any of:

* ``begin(loop)``: before the first train call;
* ``next_boundary(loop) -> int | None``: a step no train call may cross (the
  next log or checkpoint step), so the hook sees the state at that step;
* ``after_call(loop)``: after every call, in the order of the hooks list;
  ``loop.stop()`` ends the run there (the later hooks do not run);
* ``settle(loop)``: read what the device has not yet reported (the
  non-finite flags), before anything is logged or saved; hooks that log or
  save call ``loop.settle()`` first;
* ``end(loop)``: after the last call.

A new periodic action is one more object in the list.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from absl import logging
import jax
import numpy as np

from seqjax import progress as progress_lib
from seqjax import reliability
from seqjax.training.optimizers import learning_rate_of, with_learning_rate
from seqjax.training import compile_time
from seqjax.training.records import (nonfinite_what, reduce_rows, report,
                                     save_last_good)


class Hook:
  """No-op defaults; subclasses override what they need."""

  def begin(self, loop):
    pass

  def next_boundary(self, loop) -> Optional[int]:
    del loop
    return None

  def after_call(self, loop):
    pass

  def settle(self, loop):
    pass

  def end(self, loop):
    pass


def _next_multiple(step: int, every: int) -> Optional[int]:
  return (step // every + 1) * every if every else None


class Log(Hook):
  """A metrics row every ``every`` steps, at epoch ends and at the end; a
  log line per row unless ``lines`` is false, and a line (no row) when
  ``every_secs`` have passed on ``clock`` since the last line, of the calls
  before the last (read one call late: no wait for the device). The ETA is
  the steady pace's (``loop.pace``). ``learning_rate`` (a number or a
  function of the step) is logged when the optimizer holds none."""

  def __init__(self, every: int, batch_size: int, learning_rate=None,
               lines: bool = True, every_secs: float = 0.0,
               clock: Callable[[], float] = None):
    self.every, self.batch_size = every, batch_size
    self.learning_rate, self.lines = learning_rate, lines
    self.every_secs, self.clock = every_secs, clock or time.monotonic

  def begin(self, loop):
    self.t_log, self.step_log = loop.t_start, loop.step
    self.t_line, self.unlined = self.clock(), []  # calls since the last line

  def next_boundary(self, loop):
    return _next_multiple(loop.step, self.every)

  def after_call(self, loop):
    self.unlined.append(loop.last_call)
    step = loop.step
    if self.every and step % self.every == 0 or loop.epoch_end or loop.at_end:
      self.write_row(loop)
    elif (self.lines and self.every_secs and
          self.clock() - self.t_line >= self.every_secs):
      self.time_line(loop)

  def write_row(self, loop):
    loop.settle()
    step, now = loop.step, time.perf_counter()
    rate = (step - self.step_log) / max(now - self.t_log, 1e-9)
    fields = {}
    lr = learning_rate_of(loop.state.opt_state)  # the optimizer's own, if any
    lr = self.learning_rate if lr is None else lr
    if lr is not None:
      fields["learning_rate"] = float(lr(step) if callable(lr) else lr)
    row = loop.write_row(loop.pending, steps_per_s=rate,
                         samples_per_s=rate * self.batch_size,
                         wall_s=now - loop.t_start, **fields,
                         **loop.compiles.fields(), time=time.time())
    loop.pending, loop.stats.last_metrics, loop.row = [], row, row
    if self.lines:
      self.line(loop, step, row, rate)
    self.t_log, self.step_log, self.unlined = now, step, []

  def time_line(self, loop):
    """A line for the calls before the last, whose metrics are on the host
    by now or soon (the last call may still run)."""
    if len(self.unlined) < 2:
      return
    done, self.unlined = self.unlined[:-1], self.unlined[-1:]
    _, k, before = done[-1]
    steps = sum(call[1] for call in done)
    rate = steps / max(self.clock() - self.t_line, 1e-9)
    self.line(loop, before + k, reduce_rows([c[:2] for c in done]), rate)

  def line(self, loop, step: int, row: dict, rate: float):
    report(f"step {step}/{loop.total} epoch {step / loop.spe:.2f} loss "
           f"{row.get('loss', float('nan')):.4f} token_acc "
           f"{row.get('token_accuracy', float('nan')):.4f} {rate:.1f} "
           f"steps/s {eta_text(loop)}")
    self.t_line = self.clock()


def eta_text(loop) -> str:
  """"ETA 95s", "ETA 95s (time budget)" when the budget ends the run first,
  "ETA ?" before the first step."""
  eta, by_budget = loop.pace.eta(loop.step, loop.total, loop.spe)
  if eta is None:
    return "ETA ?"
  return f"ETA {eta:.0f}s" + (" (time budget)" if by_budget else "")


class Progress(Hook):
  """A live bar per epoch on stdout (``seqjax.progress``), with the loss of
  the log rows (the host has no other)."""

  def begin(self, loop):
    self.bar = progress_lib.Progress("bar", loop.total, loop.spe,
                                     start_step=loop.step)

  def after_call(self, loop):
    eta, by_budget = loop.pace.eta(loop.step, loop.total, loop.spe)
    self.bar.update(loop.step, loop.row.get("loss"), run_eta=eta,
                    run_note="time budget" if by_budget else "")

  def end(self, loop):
    self.bar.close()


class Checkpoint(Hook):
  """Saves (``loop.save``) every ``every_steps``, when ``every_secs`` have
  passed on ``clock`` since the last save, at epoch ends and at the end."""

  def __init__(self, checkpointer, every_steps: int = 0,
               every_secs: float = 0.0, clock: Callable[[], float] = None):
    self.checkpointer, self.every_steps = checkpointer, every_steps
    self.every_secs, self.clock = every_secs, clock or time.monotonic

  def begin(self, loop):
    loop.checkpointer, self.t_ckpt = self.checkpointer, self.clock()

  def next_boundary(self, loop):
    return _next_multiple(loop.step, self.every_steps)

  def after_call(self, loop):
    due = (loop.epoch_end or loop.at_end or
           bool(self.every_steps and loop.step % self.every_steps == 0) or
           # A clock read, no device sync: the save itself waits.
           bool(self.every_secs and
                self.clock() - self.t_ckpt >= self.every_secs))
    if due:
      loop.settle()
      loop.save()
      self.t_ckpt = self.clock()


class Selection:
  """Model selection on a ``selection.Tracker`` (not a hook: ``EpochEval``
  updates it, ``KeepBest`` and ``Patience`` read it). The plateau schedule
  cuts the learning rate by ``decay_factor`` after ``lr_patience`` epochs
  without a gain (``plateau``)."""

  def __init__(self, tracker, plateau: bool = False, lr_patience: int = 2,
               decay_factor: float = 0.5):
    self.tracker, self.plateau = tracker, plateau
    self.lr_patience, self.decay_factor = lr_patience, decay_factor
    self.improved, self.updated_at = False, None

  def update(self, loop, extra: dict, epoch: int) -> dict:
    """The tracker's update after ``epoch``, the plateau cut; -> fields
    for the evaluation row."""
    tracker = self.tracker
    self.improved = tracker.update(extra, loop.step, epoch)
    self.updated_at = loop.step
    fields = {"improved": self.improved,
              "epochs_since_best": tracker.bad_epochs}
    if (not self.improved and self.plateau and
        tracker.plateau_due(self.lr_patience)):
      lr = float(learning_rate_of(loop.state.opt_state)) * self.decay_factor
      loop.state = with_learning_rate(loop.state, lr)
      tracker.cut()
      logging.info("%s has not improved for %d epoch(s): learning rate now "
                   "%.4g.", tracker.metric, self.lr_patience, lr)
    lr = learning_rate_of(loop.state.opt_state)
    if lr is not None:
      fields["learning_rate"] = float(lr)
    loop.save_fields["selection"] = tracker.to_json()
    return fields

  def begin(self, loop):
    loop.save_fields["selection"] = self.tracker.to_json()

  def end(self, loop):
    loop.stats.selection = self.tracker.to_json()


class EpochEval(Hook):
  """``fn(state, epoch) -> dict`` after each epoch, then ``selection`` on
  its dict; both logged in one evaluation row. An ``fn`` with
  ``compile_ahead(params)`` (``seqjax.evaluate.Evaluator``) has its programs
  compiled in the background from the first call on."""

  def __init__(self, fn: Optional[Callable], selection: Optional[Selection]):
    self.fn, self.selection, self.ahead = fn, selection, False

  def begin(self, loop):
    if self.selection is not None:
      self.selection.begin(loop)
    self.ahead = hasattr(self.fn, "compile_ahead")

  def after_call(self, loop):
    if self.ahead:  # queued after the train programs the first call met
      self.ahead = False
      self.fn.compile_ahead(loop.state.params)
    if not loop.epoch_end or self.fn is None:
      return
    epoch = loop.step // loop.spe
    t0, compiles = loop.pace.clock(), compile_time.Since()
    extra = dict(self.fn(loop.state, epoch) or {})
    loop.pace.add_eval(loop.pace.clock() - t0, compiles.seconds())
    fields = ({} if self.selection is None else
              self.selection.update(loop, extra, epoch))
    if extra or fields:
      loop.write({"step": loop.step, "epoch": epoch, "eval": True,
                  "wall_s": time.perf_counter() - loop.t_start,
                  "time": time.time(), **extra, **fields})

  def end(self, loop):
    if self.selection is not None:
      self.selection.end(loop)


class KeepBest(Hook):
  """The state of an epoch that improved (or that ranks among the best the
  checkpoint keeps: its ``wants``), saved to ``best_checkpoint``."""

  def __init__(self, selection: Selection, best_checkpoint):
    self.selection, self.best_checkpoint = selection, best_checkpoint

  def after_call(self, loop):
    selection = self.selection
    if selection.updated_at != loop.step:
      return
    wants = getattr(self.best_checkpoint, "wants", None)
    if (selection.improved if wants is None else
        wants(selection.tracker, selection.improved)):
      self.best_checkpoint.save(loop.state, selection.tracker,
                                **({"ema": loop.save_fields["ema"]}
                                   if "ema" in loop.save_fields else {}))


class Patience(Hook):
  """Stops after ``patience`` epochs in a row without a gain."""

  def __init__(self, selection: Selection, patience: int):
    self.selection, self.patience = selection, patience

  def after_call(self, loop):
    tracker = self.selection.tracker
    if (self.selection.updated_at != loop.step or loop.at_end or
        not tracker.exhausted(self.patience)):
      return
    loop.stats.stopped_early = True
    loop.stats.stopped_epoch = tracker.last_epoch
    logging.info("Early stop after epoch %d: %s has not improved for %d "
                 "epochs (best %s at epoch %s).", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs, tracker.best,
                 tracker.best_epoch)
    loop.stop()


class TimeBudget(Hook):
  """At an epoch end, stops when another epoch as long as the last, less
  its compiles (``loop.compiles``; steady steps and evaluation), would pass
  ``seconds`` of training on ``clock``."""

  def __init__(self, seconds: float, clock: Callable[[], float] = None):
    self.seconds, self.clock = seconds, clock or time.monotonic

  def begin(self, loop):
    self.t_fit = self.t_epoch = self.clock()
    self.compiled = loop.compiles.seconds()
    loop.pace.budget = (self.seconds, self.t_fit)

  def after_call(self, loop):
    if not loop.epoch_end or loop.at_end:
      return
    now, compiled = self.clock(), loop.compiles.seconds()
    epoch_seconds = max(now - self.t_epoch - (compiled - self.compiled), 0.0)
    self.t_epoch, self.compiled = now, compiled
    if now - self.t_fit + epoch_seconds <= self.seconds:
      return
    loop.stats.stopped_on_budget = True
    logging.info("Stopping at step %d: another epoch, %.0f s without "
                 "compiles, would pass the %.0f s training budget (%.0f s "
                 "used, %.0f s of it compiling).", loop.step, epoch_seconds,
                 self.seconds, now - self.t_fit, compiled)
    loop.stop()


class Interrupt(Hook):
  """``should_stop()`` true: logs the steps since the last row, saves and
  stops (``stats.interrupted``)."""

  def __init__(self, should_stop: Callable[[], bool]):
    self.should_stop = should_stop

  def after_call(self, loop):
    if loop.at_end or not self.should_stop():
      return
    loop.settle()
    if loop.pending:
      loop.stats.last_metrics = loop.write_row(loop.pending, interrupted=True)
      loop.pending = []
    loop.save()
    loop.stats.interrupted = True
    logging.warning("Stopped at step %d on request.", loop.step)
    loop.stop()


class NonFinite(Hook):
  """Reads each call's non-finite flags one call late (no wait for the
  device after every call), or at once when ``settle`` is asked: counts the
  skipped steps; with ``stop`` a bad step logs and saves the last good state
  and raises ``reliability.NonFiniteError``."""

  def __init__(self, stop: bool):
    self.stop, self.unchecked = stop, None   # (metrics_K, k, step before)

  def after_call(self, loop):
    self.settle(loop)
    self.unchecked = loop.last_call

  def settle(self, loop):
    if self.unchecked is None:
      return
    metrics_K, k, step_before = self.unchecked
    self.unchecked = None
    bad_K = np.asarray(metrics_K["nonfinite"])[:k] > 0
    if self.stop and bad_K.any():
      self._stop(loop, metrics_K, int(np.argmax(bad_K)), step_before)
    loop.stats.nonfinite_skipped += int(bad_K.sum())

  def _stop(self, loop, metrics_K, j, step):
    """Step ``step + j + 1`` was not finite: the state (and carry) are the
    last good ones (step + j)."""
    host = jax.device_get(metrics_K)
    bad, good = step + j + 1, step + j
    loss, grad_norm = float(host["loss"][j]), float(host["grad_norm"][j])
    # The calls before the bad one count, and its steps before the bad step.
    before = [i for i, (m, _) in enumerate(loop.pending) if m is metrics_K]
    loop.write_row(loop.pending[:before[0]] + [(metrics_K, j)], step=good,
                   epoch=good / loop.spe, nonfinite_step=bad,
                   nonfinite_loss=str(loss), nonfinite_grad_norm=str(grad_norm))
    saved = save_last_good(loop, good)
    raise reliability.NonFiniteError(
        f"Non-finite {nonfinite_what(loss, grad_norm)} at step {bad} (epoch "
        f"{bad / loop.spe:.2f}): the update was not applied and training "
        f"stopped.{saved} A lower learning rate, or nonfinite=\"skip\" (skip "
        "such steps), avoids this.")
