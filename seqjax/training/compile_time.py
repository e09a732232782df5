"""Compile seconds and counts, from JAX's compile events, by program kind.

JAX reports the spans of tracing, lowering and XLA compiling
(``jax.monitoring`` time spans). A nested jit's trace lies inside its
caller's, so the seconds are the length of the spans' union, never their
sum; the counts are XLA compiles (one per program and shape). Each span is
charged to the kind of work the loop was doing (``phase``): "train" in the
train calls; elsewhere "eval" or "decode" by the function's name, else
"other".
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


class Ledger:
  """The union of compile spans (``seconds``) and XLA compiles (``counts``),
  per kind."""

  def __init__(self):
    self.seconds = collections.Counter()
    self.counts = collections.Counter()
    self._starts, self._ends = [], []   # disjoint spans, sorted
    self._lock = threading.Lock()

  def add(self, kind: str, start: float, end: float, compiled: bool):
    with self._lock:
      self.seconds[kind] += self._cover(start, end)
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

  def snapshot(self) -> tuple[dict, dict]:
    with self._lock:
      return dict(self.seconds), dict(self.counts)


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
    LEDGER.add(kind_of(kwargs.get("fun_name", "")), start, end,
               event == BACKEND_COMPILE)


jax.monitoring.register_event_time_span_listener(_on_span)


class Since:
  """The compiles since it was made: ``seconds()``, ``count()`` (totals or of
  one kind) and ``fields()`` (for a metrics row or results.json)."""

  def __init__(self, ledger: Ledger = LEDGER):
    self.ledger = ledger
    self.seconds0, self.counts0 = ledger.snapshot()

  def _delta(self) -> tuple[dict, dict]:
    seconds, counts = self.ledger.snapshot()
    return ({k: seconds.get(k, 0.0) - self.seconds0.get(k, 0.0)
             for k in KINDS},
            {k: counts.get(k, 0) - self.counts0.get(k, 0) for k in KINDS})

  def seconds(self, kind: str = "") -> float:
    seconds, _ = self._delta()
    return seconds[kind] if kind else sum(seconds.values())

  def count(self, kind: str = "") -> int:
    _, counts = self._delta()
    return counts[kind] if kind else sum(counts.values())

  def fields(self) -> dict:
    """compile_seconds, compiles and the same per kind (kinds with any)."""
    seconds, counts = self._delta()
    out = {"compile_seconds": round(sum(seconds.values()), 3),
           "compiles": sum(counts.values())}
    for kind in KINDS:
      if seconds[kind] or counts[kind]:
        out[f"compile_seconds_{kind}"] = round(seconds[kind], 3)
        out[f"compiles_{kind}"] = counts[kind]
    return out
