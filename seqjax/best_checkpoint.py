"""The best epochs' states, kept beside the latest checkpoints.

A run that selects by a held-out metric (``seqjax.selection``) keeps the best
epoch's state in ``<workdir>/best`` (one step, or the ``keep`` best for
averaging) and its record in ``<workdir>/best.json`` (its step, epoch, metric
and value).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from absl import logging

import jax

from seqjax import reliability
from seqjax.checkpoint import Checkpointer
from seqjax.errors import SeqjaxError
from seqjax.train import TrainState


class BestCheckpoint:
  """The state of the best epoch so far (by a ``selection.Tracker``), in
  ``<workdir>/best`` beside the latest checkpoints, and its record in
  ``<workdir>/best.json``: step, epoch, metric, value. With ``keep`` > 1 the
  ``keep`` best epochs' states stay there (for ``seqjax.averaging``) and
  best.json lists them best first under ``kept`` (step, epoch, value)."""

  def __init__(self, workdir: str, model_config: dict,
               keep: Optional[int] = 1):
    self.keep = keep
    # keep > 1: this class deletes the states that leave the best ``keep``;
    # None: only read, nothing deleted.
    self.checkpointer = Checkpointer(workdir, model_config,
                                     max_to_keep=1 if keep == 1 else None,
                                     subdir="best")
    self.path = os.path.join(os.path.abspath(workdir), "best.json")

  def wants(self, tracker, improved: bool) -> bool:
    """Whether the epoch ``tracker`` last read is kept: it improved, or
    (``keep`` > 1) it ranks among the ``keep`` best so far."""
    if improved or self.keep == 1:
      return improved
    kept = self.kept()
    if len(kept) < self.keep:
      return True
    worst = kept[-1]["value"]
    return tracker.last > worst if tracker.maximize else tracker.last < worst

  def save(self, state: TrainState, tracker, ema=None) -> None:
    """``state`` (with its parameters' moving average ``ema``) as the
    epoch ``tracker`` last read, at its step (replacing the one there)."""
    step = int(state.step)
    if step in self.checkpointer.all_steps():
      # A resumed run trained this epoch again: its state replaces the one
      # the killed run saved.
      self.checkpointer.delete(step)
    self.checkpointer.save(state, ema=ema)
    record = {"step": tracker.best_step, "epoch": tracker.best_epoch,
              "metric": tracker.metric, "value": tracker.best,
              "maximize": tracker.maximize}
    if (self.keep or 0) > 1:
      record["kept"] = self._ranked(tracker, step)
    if jax.process_index() == 0:
      reliability.write_atomic(self.path, json.dumps(record, indent=2) + "\n")

  def _ranked(self, tracker, step: int) -> list[dict]:
    """The kept epochs with ``step`` (``tracker``'s last) among them, best
    first; the states that fall out of the best ``keep`` are deleted."""
    entry = {"step": step, "epoch": tracker.last_epoch, "value": tracker.last}
    kept = [k for k in self.kept() if k["step"] != step] + [entry]
    sign = -1 if tracker.maximize else 1
    kept.sort(key=lambda k: sign * k["value"])
    for dropped in kept[self.keep:]:
      if dropped["step"] in self.checkpointer.all_steps():
        self.checkpointer.delete(dropped["step"])
    return kept[:self.keep]

  def kept(self) -> list[dict]:
    """The kept epochs (step, epoch, value), best first."""
    return list((self.record() or {}).get("kept") or [])

  def step(self) -> Optional[int]:
    """The best epoch's step where its state is here, else the newest
    state's."""
    best = (self.record() or {}).get("step")
    steps = self.checkpointer.all_steps()
    return best if best in steps else (steps[-1] if steps else None)

  def record(self) -> Optional[dict]:
    """best.json, or None when there is none (or it cannot be read)."""
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def restore(self, state: TrainState, step: int) -> Optional[TrainState]:
    """The best state saved at ``step``, shaped as ``state``; None when the
    best checkpoint holds another step (or none)."""
    if self.step() != step:
      return None
    try:
      restored = self.checkpointer.restore(state, step)
    except SeqjaxError as e:  # damaged (set aside) or another model's
      logging.warning("The best checkpoint cannot be used: %s", e)
      return None
    return restored if int(restored.step) == step else None

  def close(self):
    self.checkpointer.close()
