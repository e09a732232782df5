"""Checkpoints with orbax: save, resume from the latest step, refuse a mismatch.

A checkpoint holds the train state (step, params, optimizer state) and, beside
it, the JSON model config it was written for. Before anything is restored or
written, the config in the workdir is compared with the current one: a
different model stops the run with a message naming the differing keys, and
the checkpoint is left untouched.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from seqjax.errors import SeqjaxError
from seqjax.train import TrainState


class CheckpointMismatchError(SeqjaxError):
  """The checkpoint in a workdir was written for a different model."""


def _state_tree(state: TrainState) -> dict:
  return {"step": state.step, "params": state.params,
          "opt_state": state.opt_state}


def _jsonable(config: dict) -> dict:
  return json.loads(json.dumps(config, default=str))


class Checkpointer:
  """Saves and restores a ``TrainState`` under ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, model_config: dict, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.model_config = _jsonable(model_config)
    self._manager: Optional[ocp.CheckpointManager] = None
    self._max_to_keep = max_to_keep

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self._max_to_keep, create=True,
          enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(
          self.directory, options=options, item_names=("state", "config"))
    return self._manager

  def latest_step(self) -> Optional[int]:
    if not os.path.isdir(self.directory):
      return None
    return self.manager.latest_step()

  def saved_config(self, step: Optional[int] = None) -> Optional[dict]:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored["config"]

  def check_compatible(self) -> Optional[int]:
    """Raises CheckpointMismatchError if the latest checkpoint is for another
    model; returns its step (None when there is none)."""
    step = self.latest_step()
    if step is None:
      return None
    saved = self.saved_config(step) or {}
    keys = sorted(set(saved) | set(self.model_config))
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {self.model_config.get(k)!r}"
             for k in keys if saved.get(k) != self.model_config.get(k)]
    if diffs:
      raise CheckpointMismatchError(
          f"The checkpoint in {self.directory} (step {step}) was written for a "
          f"different model ({'; '.join(diffs)}). Use another --workdir or the "
          "flags it was trained with; the checkpoint was left untouched.")
    return step

  def restore(self, state: TrainState, step: Optional[int] = None) -> TrainState:
    """Returns ``state`` with step, params and optimizer state from disk."""
    step = self.check_compatible() if step is None else step
    if step is None:
      return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))["state"]
    except (ValueError, KeyError) as e:
      raise CheckpointMismatchError(
          f"The checkpoint in {self.directory} (step {step}) does not fit the "
          f"model: {e}. Use another --workdir; the checkpoint was left "
          "untouched.") from e
    return state.replace(step=restored["step"], params=restored["params"],
                         opt_state=restored["opt_state"])

  def save(self, state: TrainState, force: bool = False) -> bool:
    step = int(state.step)
    if not force and self.latest_step() == step:
      return False
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_state_tree(state)),
        config=ocp.args.JsonSave(self.model_config)), force=force)
    self.manager.wait_until_finished()
    return True

  def close(self):
    if self._manager is not None:
      self._manager.close()
      self._manager = None
