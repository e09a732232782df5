"""Model selection by a held-out metric: the record ``seqjax.train.fit``
keeps after each epoch.

A task names the metric (``Setup.select_metric``, a key of the dict its
``epoch_end`` returns) and whether higher is better; ``Tracker.update`` reads
it after each epoch and says whether it improved. The same counts drive
keep-best (``fit(..., best_checkpoint=)``), early stopping (``patience``) and
the plateau learning-rate schedule (``lr_patience``). The record is saved
with every checkpoint (``to_json``), so a resumed run selects as an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from seqjax.errors import SeqjaxError


@dataclasses.dataclass
class Tracker:
  """The best value of ``metric`` so far and the epochs since it."""

  metric: str
  maximize: bool = True
  best: Optional[float] = None
  best_step: Optional[int] = None
  best_epoch: Optional[int] = None
  last: Optional[float] = None       # the latest epoch's value
  last_step: Optional[int] = None
  last_epoch: Optional[int] = None
  bad_epochs: int = 0                # epochs since the best (early stopping)
  plateau_epochs: int = 0            # ... since the best or the last LR cut
  lr_cuts: int = 0

  def update(self, metrics: dict, step: int, epoch: int) -> bool:
    """Reads ``metrics[metric]`` after epoch ``epoch`` (at ``step``); ->
    whether it is strictly better than every earlier epoch's. A non-finite
    value never is."""
    if self.metric not in metrics:
      raise SeqjaxError(
          f"select metric {self.metric!r} is not among the epoch-end "
          f"metrics ({', '.join(sorted(metrics)) or 'none'})")
    value = float(metrics[self.metric])
    improved = math.isfinite(value) and (
        self.best is None or (value > self.best if self.maximize
                              else value < self.best))
    self.last, self.last_step, self.last_epoch = value, step, epoch
    if improved:
      self.best, self.best_step, self.best_epoch = value, step, epoch
      self.bad_epochs = self.plateau_epochs = 0
    else:
      self.bad_epochs += 1
      self.plateau_epochs += 1
    return improved

  def exhausted(self, patience: int) -> bool:
    """Early stopping: ``patience`` (> 0) epochs in a row without a gain."""
    return patience > 0 and self.bad_epochs >= patience

  def plateau_due(self, lr_patience: int) -> bool:
    """The plateau schedule cuts the learning rate now."""
    return lr_patience > 0 and self.plateau_epochs >= lr_patience

  def cut(self) -> None:
    """The learning rate was cut: the plateau count starts again."""
    self.plateau_epochs = 0
    self.lr_cuts += 1

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, saved: Optional[dict], metric: str, maximize: bool
                ) -> "Tracker":
    """The record saved with a checkpoint, or a fresh one when there is none
    or it selected by another metric or direction."""
    fresh = cls(metric, maximize)
    if not saved or saved.get("metric") != metric or bool(
        saved.get("maximize")) != maximize:
      return fresh
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})
