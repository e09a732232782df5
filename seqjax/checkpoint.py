"""Checkpoints with orbax: save, resume from the latest step, refuse a mismatch.

A checkpoint holds the train state (step, params, optimizer state) and, beside
it, the JSON model config it was written for. Before anything is restored or
written, the config in the workdir is compared with the current one: a
different model stops the run with a message naming the differing keys, and
the checkpoint is left untouched.

A damaged checkpoint (a file truncated or deleted, so its config, metadata or
arrays cannot be read, or an array is not finite) is moved aside to
``<workdir>/checkpoints.damaged/<step>`` with a warning naming it and the
step resumed from instead, the newest good one. Moving it out keeps it out of
orbax's retention count, so ``max_to_keep`` never deletes the only good
checkpoint to make room. Orbax writes each step to a temporary directory and
renames it when complete, so a save killed halfway never looks like a step
(its leftovers are removed when the next run opens the directory).

A run that selects by a held-out metric (``seqjax.selection``) saves the
tracker's record as a JSON item of each step; ``seqjax.best_checkpoint``
keeps the best epoch's state beside the latest ones.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from absl import logging

import jax
import numpy as np
import orbax.checkpoint as ocp

from seqjax import settings as settings_lib
from seqjax.errors import SeqjaxError
from seqjax.train import TrainState


class CheckpointMismatchError(SeqjaxError):
  """The checkpoint in a workdir was written for a different model."""


def _state_tree(state: TrainState, carry=None, ema=None) -> dict:
  """What is saved: the train state and, for a stateful run, the carry at
  its step (so a resumed run continues mid-stream exactly); with ``ema``,
  the parameters' moving average at its step (``training.ema``)."""
  tree = {"step": state.step, "params": state.params,
          "opt_state": state.opt_state}
  if carry is not None:
    tree["carry"] = carry
  if ema is not None:
    tree["ema"] = ema
  return tree


# Checkpoint config keys that shape only the optimizer state (recorded when
# not the defaults): loading parameters alone need not match them.
OPTIMIZER_STRUCTURE = ("lr_schedule", "gradient_clipping")


def flat_record(config: dict) -> dict:
  """``config`` with a nested dict's keys as ``outer.inner``: a mismatch
  names the setting that differs."""
  flat = {}
  for k, v in config.items():
    if isinstance(v, dict):
      flat.update({f"{k}.{n}": x for n, x in flat_record(v).items()})
    else:
      flat[k] = v
  return flat


def _jsonable(config: dict) -> dict:
  return json.loads(json.dumps(config, default=str))


class Checkpointer:
  """Saves and restores a ``TrainState`` under ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, model_config: dict, max_to_keep: int = 3,
               subdir: str = "checkpoints"):
    self.directory = os.path.abspath(os.path.join(workdir, subdir))
    self.model_config = _jsonable(model_config)
    self._manager: Optional[ocp.CheckpointManager] = None
    self._max_to_keep = max_to_keep

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self._max_to_keep, create=True,
          enable_async_checkpointing=False,
          # Leftovers of a save killed halfway; the workdir lock means no
          # other process is writing here.
          cleanup_tmp_directories=True)
      self._manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_names=("state", "config", "selection"))
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
    return settings_lib.upgrade_record(restored["config"])

  def saved_selection(self, step: Optional[int] = None) -> Optional[dict]:
    """The selection record (``selection.Tracker.to_json``) saved with
    checkpoint ``step`` (default: the latest); None when it has none."""
    step = self.latest_step() if step is None else step
    if step is None or not os.path.isdir(
        os.path.join(self.directory, str(step), "selection")):
      return None
    restored = self.manager.restore(
        step, args=ocp.args.Composite(selection=ocp.args.JsonRestore()))
    return restored["selection"]

  def check_compatible(self) -> Optional[int]:
    """Raises CheckpointMismatchError if the latest checkpoint is for another
    model; returns its step (None when there is none). A checkpoint whose
    config cannot be read is set aside as damaged (see ``restore``)."""
    damaged = []
    while True:
      step = self.latest_step()
      if step is None:
        self._report_damaged(damaged, None)
        return None
      try:
        saved = self.saved_config(step) or {}
        break
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(self._set_aside(step, f"config unreadable: {e}"))
    self._report_damaged(damaged, step)
    saved, now = flat_record(saved), flat_record(self.model_config)
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
             for k in sorted(set(saved) | set(now))
             if saved.get(k) != now.get(k)]
    if diffs:
      raise CheckpointMismatchError(
          f"The checkpoint in {self.directory} (step {step}) was written for a "
          f"different model ({'; '.join(diffs)}). Train in another workdir or "
          "with the settings it was trained with; the checkpoint was left "
          "untouched.")
    return step

  def restore(self, state: TrainState, step: Optional[int] = None) -> TrainState:
    """Returns ``state`` with step, params and optimizer state from disk.

    If checkpoint ``step`` (default: the latest) is damaged, it is moved to
    ``checkpoints.damaged/`` and the newest good older one is restored, with
    a warning naming both; the step restored is ``int(result.step)``. With
    no good checkpoint left, raises SeqjaxError. A stateful run's saved
    carry is read and dropped (see ``restore_with_carry``).
    """
    return self.restore_with_carry(state, None, step)[0]

  def restore_with_carry(self, state: TrainState, carry, step: Optional[int]
                         = None) -> tuple[TrainState, Any]:
    """``restore`` for a stateful run: -> (state, the carry saved with it).
    ``carry`` is a template (e.g. the initial carry); it comes back as it is
    when the checkpoint holds none, or there is no checkpoint."""
    step = self.check_compatible() if step is None else step
    damaged = []
    while step is not None:
      target = self._target(state, carry, step)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        bad = [jax.tree_util.keystr(p) for p, x in
               jax.tree_util.tree_leaves_with_path(restored)
               if not np.isfinite(np.asarray(x)).all()]
        if not bad:
          break
        reason = f"non-finite values in {', '.join(bad[:3])}"
      except Exception as e:  # pylint: disable=broad-except
        if self._fits(step, target) is False:
          raise CheckpointMismatchError(
              f"The checkpoint in {self.directory} (step {step}) does not fit "
              f"the model: {e}. The checkpoint was left untouched.") from e
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      damaged.append(self._set_aside(step, reason))
      step = self.check_compatible()  # the next older one
    self._report_damaged(damaged, step)
    if step is None:
      return state, carry
    current = _state_tree(state, carry if "carry" in restored else None)
    restored = jax.tree.map(_like, current, {k: restored[k] for k in current})
    return state.replace(step=restored["step"], params=restored["params"],
                         opt_state=restored["opt_state"]), restored.get(
                             "carry", carry)

  def _target(self, state, carry, step: int) -> dict:
    """The restore target: the state's (and carry's) shapes; a carry the
    checkpoint holds but the caller did not ask for is read as saved, and
    one asked for but not saved is left out."""
    saved = self._metadata(step)
    has_carry = isinstance(saved, dict) and "carry" in saved
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(
        state, carry if has_carry or saved is None else None))
    if carry is None and has_carry:
        target["carry"] = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
            saved["carry"], is_leaf=lambda m: hasattr(m, "shape"))
    if isinstance(saved, dict) and "ema" in saved:  # read, left unused
      target["ema"] = target["params"]
    return target

  def has_ema(self, step: int) -> bool:
    """Whether checkpoint ``step`` holds the parameters' moving average."""
    saved = self._metadata(step)
    return isinstance(saved, dict) and "ema" in saved

  def _metadata(self, step: int):
    """Checkpoint ``step``'s saved array metadata tree; None if unreadable."""
    try:
      return ocp.StandardCheckpointer().metadata(
          os.path.join(self.directory, str(step), "state")).item_metadata.tree
    except Exception:  # pylint: disable=broad-except
      return None

  def restore_params(self, params, step: Optional[int] = None,
                     key: str = "params"):
    """The parameters alone of checkpoint ``step`` (default: the latest),
    shaped and placed as ``params``: inference needs no optimizer state;
    ``key="ema"``: their moving average (``has_ema``). Raises
    CheckpointMismatchError for another model's checkpoint and SeqjaxError
    when there is none (a damaged one is not skipped here)."""
    step = self.check_compatible() if step is None else step
    if step is None:
      raise SeqjaxError(f"No checkpoint in {self.directory}")
    target = {key: jax.tree.map(ocp.utils.to_shape_dtype_struct, params)}
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    ))["state"]
    return jax.tree.map(_like, params, restored[key])

  def restore_host_params(self, shapes, step: int, key: str = "params"):
    """The parameters alone of checkpoint ``step`` as NumPy arrays, in the
    tree of ``shapes`` (``jax.ShapeDtypeStruct`` leaves, e.g. from
    ``jax.eval_shape`` of the model's init): no device program runs to place
    them; ``key="ema"``: their moving average. Raises
    CheckpointMismatchError where a shape differs."""
    target = {key: shapes}
    restore_args = jax.tree.map(
        lambda s: ocp.RestoreArgs(restore_type=np.ndarray, dtype=s.dtype),
        target)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                     restore_args=restore_args)))["state"]
    params = restored[key]
    if _signature(params) != _signature(shapes):
      raise CheckpointMismatchError(
          f"The parameters of the checkpoint in {self.directory} (step "
          f"{step}) are not this model's: {_signature(params)} != "
          f"{_signature(shapes)}")
    return params

  def _fits(self, step: int, target) -> Optional[bool]:
    """Whether checkpoint ``step``'s array metadata matches ``target``'s
    paths, shapes and dtypes; None when the metadata cannot be read."""
    saved = self._metadata(step)
    return None if saved is None else _signature(saved) == _signature(target)

  def _set_aside(self, step: int, reason: str) -> tuple[int, str, str]:
    """Moves damaged step ``step`` to checkpoints.damaged/ (kept, never
    deleted, out of retention's count); -> (step, reason, new path)."""
    src = os.path.join(self.directory, str(step))
    dst_root = self.directory + ".damaged"
    os.makedirs(dst_root, exist_ok=True)
    dst, i = os.path.join(dst_root, str(step)), 0
    while os.path.exists(dst):
      i += 1
      dst = os.path.join(dst_root, f"{step}.{i}")
    os.rename(src, dst)
    self.manager.reload()
    return step, reason, dst

  def _report_damaged(self, damaged, good_step: Optional[int]) -> None:
    if not damaged:
      return
    what = "; ".join(f"step {s} ({r}), moved to {d}" for s, r, d in damaged)
    if good_step is None:
      raise SeqjaxError(
          f"No usable checkpoint in {self.directory}: damaged {what}. Nothing "
          "was deleted; rerun to train from scratch, or restore the files.")
    logging.warning("Damaged checkpoint in %s: %s. Resuming from step %d, the "
                    "newest good checkpoint.", self.directory, what, good_step)

  def all_steps(self) -> list[int]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(self.manager.all_steps())

  def save(self, state: TrainState, force: bool = False, carry=None,
           selection: Optional[dict] = None, ema=None) -> bool:
    """Saves ``state`` (and a stateful run's ``carry``, the selection
    record, the parameters' moving average ``ema``) at its step, unless
    that step is saved already (``force``: again)."""
    step = int(state.step)
    if not force and self.latest_step() == step:
      return False
    items = dict(state=ocp.args.StandardSave(_state_tree(state, carry, ema)),
                 config=ocp.args.JsonSave(self.model_config))
    if selection is not None:
      items["selection"] = ocp.args.JsonSave(selection)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    self.manager.wait_until_finished()
    return True

  def delete(self, step: int) -> None:
    self.manager.delete(step)

  def close(self):
    if self._manager is not None:
      self._manager.close()
      self._manager = None


def _like(current, restored):
  """``restored`` placed as ``current`` is: orbax returns arrays committed to
  a device, while a fresh state's are not, and jit compiles once for each
  kind; a host round trip gives an uncommitted one, so a resumed run's train
  step compiles once, as a fresh run's does."""
  if isinstance(current, jax.Array) and not current.committed:
    return jax.numpy.asarray(np.asarray(restored))
  return restored


def _signature(tree) -> dict:
  """{key path: (shape, dtype)} with namedtuples, tuples, dicts and lists
  alike, so a restore target compares with orbax's saved metadata."""
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  leaves = jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
  return {"/".join(name(k) for k in path):
          (tuple(x.shape), np.dtype(x.dtype).name) for path, x in leaves
          if hasattr(x, "shape")}
