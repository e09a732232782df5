"""Training progress: a live bar per epoch on a terminal, log lines elsewhere.

  progress = Progress(mode, total_steps, steps_per_epoch, start_step=step)
  ...                              # after each jitted call (host side):
  progress.update(step, loss=row_loss_or_None)
  progress.close()                 # also a context manager

Modes (``MODES``): ``"bar"`` redraws one line per epoch with ``\\r`` (at most
every ``min_interval`` seconds, and at each epoch's end, which ends the line):

  epoch 2/10 [=====>....] 45/100 12.3 steps/s loss 0.1234 ETA 0:04 (run 1:02)

``"log"`` writes plain lines (no ``\\r``), one at each epoch's end and one at
each update given a loss (fit has the loss only at its log rows, so pass it
there). ``"none"`` writes nothing; ``"auto"`` is ``"bar"`` when the stream is
a terminal (``isatty()``) and ``"log"`` otherwise (CI, nohup, a pipe).

Rates and ETAs exclude compile time: the clock starts at the first update
(the end of the first, compiling call), and each epoch's rate is measured from
its own first update on (so epoch-end evaluation and checkpoints do not slow
the shown steps/s either). A hand-written writer, not tqdm: what this needs
(compile time left out, a bar per epoch, log lines off a terminal) would be
written around tqdm anyway.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from typing import Callable, Optional, TextIO

MODES = ("auto", "bar", "log", "none")


def resolve_mode(mode: str, stream: TextIO) -> str:
  """``mode`` with "auto" decided by ``stream.isatty()``."""
  if mode not in MODES:
    raise ValueError(f"progress mode must be one of {', '.join(MODES)}; "
                     f"got {mode!r}")
  if mode != "auto":
    return mode
  isatty = getattr(stream, "isatty", None)
  return "bar" if isatty is not None and isatty() else "log"


def format_seconds(seconds: Optional[float]) -> str:
  """0:07, 12:34, 1:02:03; "?" while unknown."""
  if seconds is None or seconds != seconds or seconds == float("inf"):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return (f"{hours}:{minutes:02d}:{secs:02d}" if hours
          else f"{minutes}:{secs:02d}")


class Progress(contextlib.AbstractContextManager):
  """See the module docstring. ``clock``: seconds, injectable for tests."""

  def __init__(self, mode: str, total_steps: int, steps_per_epoch: int,
               stream: Optional[TextIO] = None, start_step: int = 0,
               min_interval: float = 0.1,
               clock: Callable[[], float] = time.monotonic):
    if steps_per_epoch < 1 or total_steps < 0:
      raise ValueError(f"need steps_per_epoch >= 1 and total_steps >= 0; got "
                       f"{steps_per_epoch} and {total_steps}")
    self.stream = sys.stdout if stream is None else stream
    self.mode = resolve_mode(mode, self.stream)
    self.total, self.spe = total_steps, steps_per_epoch
    self.min_interval, self.clock = min_interval, clock
    self.step, self.loss = start_step, None
    self.rate: Optional[float] = None   # steps/s, compile time excluded
    self._first: Optional[tuple[int, float]] = None  # (step, time)
    self._epoch_start: Optional[tuple[int, int, float]] = None  # + epoch
    self._drawn_at = -float("inf")
    self._open_line = False
    self.run_eta: Optional[float] = None  # the caller's, else from the rate
    self.run_note = ""

  def update(self, step: int, loss: Optional[float] = None,
             run_eta: Optional[float] = None, run_note: str = "") -> None:
    """Call after each jitted call with the step reached (and the loss when
    the host has it). ``run_eta``: the seconds to the run's end when the
    caller knows better (a time budget, evaluations), with ``run_note``
    saying why (shown beside it)."""
    now = self.clock()
    self.run_eta, self.run_note = run_eta, run_note
    self._measure(step, now)
    self.step = step
    if loss is not None:
      self.loss = float(loss)
    epoch_end = step % self.spe == 0 or step >= self.total
    if self.mode == "bar":
      if epoch_end or now - self._drawn_at >= self.min_interval:
        self._draw(end=epoch_end)
        self._drawn_at = now
    elif self.mode == "log" and (epoch_end or loss is not None):
      self.stream.write(self.line() + "\n")
      self.stream.flush()

  def _measure(self, step: int, now: float) -> None:
    """The epoch's rate from its first update on; the run's (from its first
    update) while the epoch has only one."""
    epoch = (step - 1) // self.spe  # a call ending on a boundary: that epoch
    if self._first is None:
      self._first = (step, now)
    if self._epoch_start is None or self._epoch_start[0] != epoch:
      self._epoch_start = (epoch, step, now)
      start_step, start_time = self._first
    else:
      _, start_step, start_time = self._epoch_start
    if step > start_step and now > start_time:
      self.rate = (step - start_step) / (now - start_time)

  def eta(self, until: int) -> Optional[float]:
    """Seconds to reach step ``until`` at the current rate (None: unknown)."""
    if self.rate is None:
      return None
    return max(until - self.step, 0) / self.rate

  def line(self, width: Optional[int] = None) -> str:
    """The current status; with ``width``, a bar of the epoch first."""
    epoch = max(self.step - 1, 0) // self.spe
    in_epoch = self.step - epoch * self.spe
    epochs = -(-self.total // self.spe)
    parts = [f"epoch {epoch + 1}/{epochs}"]
    if width is not None:
      filled = int(width * in_epoch / self.spe)
      parts.append("[" + "=" * filled + (">" if filled < width else "") +
                   "." * max(width - filled - 1, 0) + "]")
    else:
      parts.append(f"step {self.step}/{self.total}")
    parts.append(f"{in_epoch}/{self.spe}")
    parts.append("? steps/s" if self.rate is None
                 else f"{self.rate:.1f} steps/s")
    if self.loss is not None:
      parts.append(f"loss {self.loss:.4f}")
    epoch_end = min((epoch + 1) * self.spe, self.total)
    run = self.eta(self.total) if self.run_eta is None else self.run_eta
    note = f", {self.run_note}" if self.run_note else ""
    parts.append(f"ETA {format_seconds(self.eta(epoch_end))} "
                 f"(run {format_seconds(run)}{note})")
    return " ".join(parts)

  def _draw(self, end: bool) -> None:
    columns = shutil.get_terminal_size((100, 24)).columns
    text = self.line(width=max(10, min(30, columns - 75)))
    self.stream.write("\r" + text[:columns - 1].ljust(columns - 1) +
                      ("\n" if end else ""))
    self.stream.flush()
    self._open_line = not end

  def close(self) -> None:
    """Ends a bar left mid-line (an interrupted run)."""
    if self._open_line:
      self.stream.write("\n")
      self.stream.flush()
      self._open_line = False

  def __exit__(self, *exc):
    self.close()
