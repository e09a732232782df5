"""Compile seconds and counts, from JAX's compile events, by program kind.

JAX reports the spans of tracing, lowering and XLA compiling
(``jax.monitoring`` time spans). A nested jit's trace lies inside its
caller's, so the seconds are the length of the spans' union, never their
sum; the counts are XLA compiles (one per program and shape). Each span is
charged to the kind of work the loop was doing (``phase``): "train" in the
train calls; elsewhere "eval" or "decode" by the function's name, else
"other". Compiles in a background thread (``BACKGROUND``, see
``seqjax.training.programs``) count as work but not as time the loop lost:
that is the time it waited for them (``waited``).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import threading

import jax

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
EVENTS = (TRACE, LOWER, BACKEND_COMPILE)
KINDS = ("train", "eval", "decode", "other")
_DECODE_NAMES = ("run", "encode", "decode", "beam", "greedy", "sample")
BACKGROUND = "compile"   # the name prefix of background compile threads


class Ledger:
  """The union of compile spans (``seconds``) and XLA compiles (``counts``),
  per kind."""

  def __init__(self):
    self.seconds = collections.Counter()
    self.counts = collections.Counter()
    self.background = collections.Counter()   # seconds, summed
    self._starts, self._ends = [], []   # disjoint spans, sorted
    self._lock = threading.Lock()

  def add(self, kind: str, start: float, end: float, compiled: bool):
    with self._lock:
      self.seconds[kind] += self._cover(start, end)
      self.counts[kind] += int(compiled)

  def add_background(self, kind: str, start: float, end: float,
                     compiled: bool):
    with self._lock:
      self.background[kind] += end - start
      self.counts[kind] += int(compiled)

  def _cover(self, start: float, end: float) -> float:
    """Adds [start, end] to the union -> the seconds it adds."""
    lo = bisect.bisect_left(self._ends, start)
    hi = bisect.bisect_right(self._starts, end)
    merged_start, merged_end = start, end
    covered = 0.0
    for s, e in zip(self._starts[lo:hi], self._ends[lo:hi]):
      merged_start, merged_end = min(merged_start, s), max(merged_end, e)
      covered += e - s
    self._starts[lo:hi], self._ends[lo:hi] = [merged_start], [merged_end]
    return max(merged_end - merged_start - covered, 0.0)

  def snapshot(self) -> tuple[dict, dict, dict]:
    with self._lock:
      return dict(self.seconds), dict(self.counts), dict(self.background)


LEDGER = Ledger()
_phase = threading.local()


def current_phase() -> str:
  return getattr(_phase, "name", "")


@contextlib.contextmanager
def phase(name: str):
  """Charges the compiles in the block to ``name`` ("train"; "" lets the
  function's name decide)."""
  before, _phase.name = current_phase(), name
  try:
    yield
  finally:
    _phase.name = before


def kind_of(fun_name: str) -> str:
  name = str(fun_name).lower()
  if current_phase() == "train" or "train_call" in name or (
      "group_call" in name):
    return "train"
  if "eval" in name:
    return "eval"
  inner = name[4:-1] if name.startswith("jit(") else name
  if any(inner.startswith(d) for d in _DECODE_NAMES):
    return "decode"
  return "other"


def _on_span(event: str, start: float, end: float, **kwargs):
  if event in EVENTS:
    add = (LEDGER.add_background
           if threading.current_thread().name.startswith(BACKGROUND)
           else LEDGER.add)
    add(kind_of(kwargs.get("fun_name", "")), start, end,
        event == BACKEND_COMPILE)


def waited(fun_name: str, start: float, end: float) -> None:
  """The caller waited from ``start`` to ``end`` for a background compile."""
  LEDGER.add(kind_of(fun_name), start, end, False)


jax.monitoring.register_event_time_span_listener(_on_span)


class Since:
  """The compiles since it was made: ``seconds()`` (the time the caller
  lost to them: its own compiles and its waits for background ones),
  ``count()`` (totals or of one kind) and ``fields()`` (for a metrics row or
  results.json: ``compile_seconds`` is the compile work, background
  included; ``compile_wait_seconds`` the time lost)."""

  def __init__(self, ledger: Ledger = LEDGER):
    self.ledger = ledger
    self.start = ledger.snapshot()

  def _delta(self) -> tuple[dict, dict, dict]:
    return tuple({k: now.get(k, 0) - before.get(k, 0) for k in KINDS}
                 for now, before in zip(self.ledger.snapshot(), self.start))

  def seconds(self, kind: str = "") -> float:
    seconds = self._delta()[0]
    return seconds[kind] if kind else sum(seconds.values())

  def count(self, kind: str = "") -> int:
    counts = self._delta()[1]
    return counts[kind] if kind else sum(counts.values())

  def fields(self) -> dict:
    """compile_seconds, compile_wait_seconds, compiles and the first and
    last per kind (kinds with any)."""
    waits, counts, background = self._delta()
    work = {k: waits[k] + background[k] for k in KINDS}
    out = {"compile_seconds": round(sum(work.values()), 3),
           "compile_wait_seconds": round(sum(waits.values()), 3),
           "compiles": sum(counts.values())}
    for kind in KINDS:
      if work[kind] or counts[kind]:
        out[f"compile_seconds_{kind}"] = round(work[kind], 3)
        out[f"compiles_{kind}"] = counts[kind]
    return out
