"""The steady pace of a fit: seconds per step and per epoch-end evaluation
with compiles left out, and the ETA they give within ``--epochs`` and the
time budget."""

from __future__ import annotations

from typing import Callable, Optional

from seqjax.training import compile_time


class Pace:
  """Fed by the loop (``steps``) and the evaluation hook (``add_eval``);
  ``clock`` is the fit's clock, the compile seconds JAX's (``compiles``)."""

  def __init__(self, clock: Callable[[], float],
               compiles: Optional[compile_time.Since] = None):
    self.clock, self.compiles = clock, compiles or compile_time.Since()
    self.t0 = clock()
    self.steps = 0
    self.eval_wall = self.eval_compile = 0.0
    self.last_eval: Optional[float] = None   # steady seconds of the last
    self.budget: Optional[tuple[float, float]] = None  # (seconds, start)

  def add_eval(self, wall: float, compile_seconds: float):
    self.eval_wall += wall
    self.eval_compile += compile_seconds
    self.last_eval = max(wall - compile_seconds, 0.0)

  def step_seconds(self) -> Optional[float]:
    """Seconds per step outside evaluations and compiles (None: no step)."""
    if not self.steps:
      return None
    outside_eval_compiles = self.compiles.seconds() - self.eval_compile
    steady = (self.clock() - self.t0 - self.eval_wall -
              outside_eval_compiles)
    return max(steady, 0.0) / self.steps

  def eta(self, step: int, total: int, spe: int
          ) -> tuple[Optional[float], bool]:
    """Seconds to the run's end -> (seconds or None, whether the time
    budget, not ``total``, ends it)."""
    step_s = self.step_seconds()
    if step_s is None:
      return None, False
    eval_s = self.last_eval or 0.0
    ends_left = total // spe - step // spe
    to_total = (total - step) * step_s + ends_left * eval_s
    if self.budget is None:
      return to_total, False
    seconds, start = self.budget
    to_epoch_end = (spe - step % spe) * step_s + eval_s
    epoch_s = spe * step_s + eval_s
    room = seconds - (self.clock() - start) - to_epoch_end
    more = max(int(room // epoch_s), 0) if epoch_s > 0 else 0
    to_budget = to_epoch_end + more * epoch_s
    if to_budget < to_total:
      return to_budget, True
    return to_total, False
