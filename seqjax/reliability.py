"""Nothing lost on a crash, a kill or a bad value.

What every training run gets through ``seqjax.runner.train_or_restore``:

* **One run per workdir.** ``WorkdirLock`` takes an exclusive ``flock`` on
  ``<workdir>/.lock``; a second run refuses at once with a message naming the
  holder. The OS drops the lock when the holder exits, however it dies (kill
  -9 included), so a dead run never blocks the next one.
* **Ctrl-C / SIGTERM.** ``InterruptGuard`` turns the first signal into a
  request that ``fit`` honours after its current jitted call: it saves a
  checkpoint at that step and the binary exits cleanly (``TrainingInterrupted``,
  exit 130, or 143 for SIGTERM). A second signal stops at once.
* **metrics.jsonl rows** are appended with one ``write(2)`` of a whole line
  (``O_APPEND``), then ``fsync``: a row is there completely or not at all. A
  torn last line (power loss, a full disk) has no newline; readers
  (``read_jsonl``) ignore it and ``prepare_resume`` removes it on resume,
  together with rows logged after the checkpoint being resumed (those steps
  are trained again and their rows rewritten, so each step is logged once).
* **Atomic files** (``write_atomic``): write a temporary file, fsync, rename.
* **Sizes** (``check_fit_size``): a batch larger than the data, or more steps
  than the int32 step counter holds, is refused before any work. (Flags out
  of range are refused by ``validate()``: see ``seqjax.config``.)

Non-finite losses and gradients are handled in ``seqjax.train`` (``FitConfig.
nonfinite``) and damaged checkpoints in ``seqjax.checkpoint``.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import json
import os
import signal
import socket
import secrets
import threading
from typing import Callable, Optional, Union

from absl import logging

from seqjax.errors import SeqjaxError
from seqjax.limits import INT32_MAX


class NonFiniteError(SeqjaxError):
  """Training met a non-finite loss, gradient or parameter and stopped."""


class WorkdirBusyError(SeqjaxError):
  """Another live process holds the workdir's lock."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C or SIGTERM during training; a checkpoint was saved first."""

  def __init__(self, step: int, workdir: str, signum: Optional[int] = None):
    self.step, self.workdir, self.signum = step, workdir, signum
    name = signal.Signals(signum).name if signum else "an interrupt"
    super().__init__(
        f"Stopped by {name} at step {step}; saved a checkpoint at step {step} "
        f"in {workdir}. Rerun the same command to resume.")

  @property
  def exit_code(self) -> int:
    return 128 + (self.signum or signal.SIGINT)


# --------------------------------------------------------------------------
# One run per workdir.


def _lock_path(workdir: str) -> str:
  """``<workdir>/.lock``; in a multi-process run each process of the one run
  shares the workdir, so each locks its own ``.lock.process<i>``."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    return os.path.join(workdir, f".lock.process{jax.process_index()}")
  return os.path.join(workdir, ".lock")


class WorkdirLock:
  """An exclusive, non-blocking ``flock`` on ``<workdir>/.lock``.

  flock locks belong to the open file, so the OS releases them when the
  process dies; the file itself stays (deleting it would race with a run
  locking it).
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = _lock_path(workdir)
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
      os.close(fd)
      raise WorkdirBusyError(
          f"the workdir {self.workdir} is in use by another run "
          f"({holder or 'unknown process'}). Wait for it to finish, or use "
          "another workdir. (The lock goes away by itself when that process "
          "exits, even if it is killed.)") from None
    except OSError as e:  # a filesystem without flock: run unprotected
      os.close(fd)
      logging.warning("Cannot lock %s (%s); a second run on this workdir would "
                      "not be refused.", self.path, e)
      return self
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                   f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n").encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def check_workdir_free(workdir: str) -> None:
  """Raises WorkdirBusyError now if another run holds ``workdir`` (a probe, so
  a second run refuses before it loads any data)."""
  if os.path.exists(_lock_path(workdir)):
    WorkdirLock(workdir).acquire().release()


def exclusive_workdir(fn: Callable) -> Callable:
  """Decorates a function taking ``workdir=`` to run under its lock."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with WorkdirLock(kwargs["workdir"]):
      return fn(*args, **kwargs)

  return wrapper


# --------------------------------------------------------------------------
# Ctrl-C and SIGTERM.


class InterruptGuard:
  """While active, the first SIGINT / SIGTERM only sets ``signum``; the
  training loop polls ``requested()`` between jitted calls, saves and stops.
  A second signal raises KeyboardInterrupt at once. Signal handlers can only
  be installed from the main thread; elsewhere this guard does nothing."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: Optional[int] = None
    self.again = False   # a second signal came
    self._previous: dict = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum is not None:
      self.again = True
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning("Caught %s: finishing the current steps, saving a "
                    "checkpoint, then exiting (send it again to stop at once).",
                    signal.Signals(signum).name)

  def requested(self) -> bool:
    # Python drops an exception raised where it cannot propagate (a __del__,
    # a weakref or C++ callback): the next poll raises it again.
    if self.again:
      raise KeyboardInterrupt
    return self.signum is not None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}


# --------------------------------------------------------------------------
# Files: whole rows, whole files.


def append_line(path: str, line: str) -> None:
  """Appends ``line`` + newline with one write(2) on an O_APPEND descriptor,
  then fsyncs: the row lands whole, after every earlier row."""
  data = (line.rstrip("\n") + "\n").encode("utf-8")
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    view = memoryview(data)
    while view:  # a regular file takes it all at once unless the disk is full
      view = view[os.write(fd, view):]
    os.fsync(fd)
  finally:
    os.close(fd)


def _split_rows(raw: bytes) -> tuple[list[bytes], bytes]:
  """-> (complete lines, torn tail without a newline)."""
  head, sep, tail = raw.rpartition(b"\n")
  lines = head.split(b"\n") if sep else []
  return [l for l in lines if l.strip()], (tail if sep else raw)


def read_jsonl(path: str) -> list[dict]:
  """The complete rows of a JSON-lines file; a torn last line (no newline
  yet) is ignored, so a reader never sees half a row."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    lines, _ = _split_rows(f.read())
  return [json.loads(l) for l in lines]


def prepare_resume(path: str, step: int) -> int:
  """Readies ``metrics.jsonl`` for a run resuming at ``step``: drops a torn
  last line and the rows logged after ``step`` (the resumed run trains those
  steps again and logs them anew). Rewrites atomically; returns the number of
  rows and torn lines dropped."""
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    raw = f.read()
  lines, torn = _split_rows(raw)
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # a damaged row (only a torn write can make one)
    if not isinstance(row, dict) or row.get("step", 0) <= step:
      keep.append(line)
  dropped = len(lines) - len(keep) + bool(torn.strip())
  if dropped:
    write_atomic(path, b"".join(l + b"\n" for l in keep))
    logging.warning("%s: dropped %d row(s) logged after step %d or torn by an "
                    "earlier crash; those steps are logged again as they are "
                    "retrained.", path, dropped, step)
  return dropped


def write_atomic(path: str, data: Union[str, bytes]) -> None:
  """Writes a temporary file beside ``path``, fsyncs it, renames it over
  ``path``: readers see the old file or the new one, never half of one."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory,
                     f".tmp-{secrets.token_hex(8)}{os.path.basename(path)}")
  # Not mkstemp, whose files are 0600: O_EXCL keeps its safety, and the
  # kernel applies the umask to 0666 as for open().
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def check_fit_size(fit_config, data) -> None:
  """Refuses, naming the values, a run whose batch is larger than the data
  or whose step count would overflow the int32 step counter."""
  try:
    n = len(next(iter(data.values())))
  except (AttributeError, StopIteration, TypeError):
    return  # not a dict of arrays: fit() checks its own input
  bsz = fit_config.batch_size
  if n < bsz:
    raise SeqjaxError(f"batch size {bsz} exceeds the {n} training examples")
  total = (n // bsz) * fit_config.epochs
  if total > INT32_MAX:
    raise SeqjaxError(
        f"{fit_config.epochs} epochs of batch size {bsz} over {n:,} examples "
        f"are {total:,} steps, more than the step counter holds "
        f"({INT32_MAX:,})")
