"""What every experiment binary shares: its config, workdir, the train-or-resume
flow and results.json. A task is data + a model choice + this.

Configs are dataclasses whose field names are the binary's flag names
(``experiments.common`` turns them into absl flags), so tests and sweeps build
the same config the command line does.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import tempfile
from typing import Any, Callable, Optional

import jax
import numpy as np

import seqjax
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer
from seqjax.errors import SeqjaxError


def field(default, help: str, **kwargs):  # pylint: disable=redefined-builtin
  """A config field with the help text of its flag."""
  return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class TrainingConfig:
  """Flags every training experiment has."""

  workdir: str = field("", "Where checkpoints, metrics.jsonl and results.json "
                       "go. Rerunning with the same workdir resumes. Empty: "
                       "runs/<task>-<timestamp>.")
  seed: int = field(0, "Seed of data, initialisation and shuffling.")
  epochs: int = field(1, "Passes over the training set.")
  batch_size: int = field(32, "Training batch size.")
  optimizer: str = field("adam", "adam, rmsprop or sgd.")
  learning_rate: Optional[float] = field(
      None, "Learning rate; default: Keras' default for the optimizer.")
  eval_only: bool = field(False, "Restore the latest checkpoint from "
                          "--workdir and evaluate, without training.")
  steps_per_call: int = field(25, "Train steps run per jitted call (a scan "
                              "over batches already on the device).")
  log_every: int = field(500, "Log training metrics every this many steps.")
  checkpoint_every: int = field(0, "Save a checkpoint every this many steps "
                                "(0: at the end of each epoch).")

  def validate(self) -> list[str]:
    """Messages naming each bad flag; empty when the config can run."""
    errors = []
    for name in ("epochs", "batch_size", "steps_per_call"):
      if getattr(self, name) < 1:
        errors.append(f"--{name} must be positive; got {getattr(self, name)}")
    for name in ("log_every", "checkpoint_every"):
      if getattr(self, name) < 0:
        errors.append(f"--{name} must be >= 0; got {getattr(self, name)}")
    if self.optimizer not in train_lib.OPTIMIZERS:
      errors.append(f"--optimizer must be one of {', '.join(train_lib.OPTIMIZERS)}"
                    f"; got {self.optimizer!r}")
    if self.learning_rate is not None and not self.learning_rate > 0:
      errors.append(f"--learning_rate must be positive; got {self.learning_rate}")
    return errors

  def fit_config(self) -> train_lib.FitConfig:
    return train_lib.FitConfig(
        batch_size=self.batch_size, epochs=self.epochs, seed=self.seed,
        steps_per_call=self.steps_per_call, log_every_steps=self.log_every,
        checkpoint_every_steps=self.checkpoint_every)


def check_config(config) -> None:
  errors = config.validate()
  if errors:
    raise SeqjaxError("Bad flags:\n  " + "\n  ".join(errors))


def resolve_workdir(config, task: str) -> str:
  """The run's workdir (created): --workdir, or a fresh timestamped one."""
  workdir = config.workdir or os.path.join(
      "runs", f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise SeqjaxError(f"--workdir={workdir} exists and is not a directory")
  os.makedirs(workdir, exist_ok=True)
  return workdir


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temporary file, then renames: readers never see half."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, default=_json_default, ensure_ascii=False)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _json_default(x):
  if isinstance(x, (np.generic, jax.Array)):
    return np.asarray(x).item() if np.asarray(x).ndim == 0 else np.asarray(x).tolist()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def base_results(task: str, config) -> dict:
  return {
      "task": task,
      "flags": dataclasses.asdict(config),
      "versions": {"seqjax": seqjax.__version__, "jax": jax.__version__,
                   "python": platform.python_version()},
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
  }


def train_or_restore(*, model, params, config: TrainingConfig, workdir: str,
                     model_config: dict, data: dict[str, np.ndarray],
                     loss_fn: train_lib.LossFn,
                     epoch_end_fn: Optional[Callable] = None,
                     fit_config: Optional[train_lib.FitConfig] = None,
                     batch_plan: Optional[train_lib.BucketPlan] = None,
                     ) -> tuple[train_lib.TrainState, train_lib.FitStats]:
  """Builds the train state, resumes from ``workdir`` and trains (or, with
  ``--eval_only``, only restores). A checkpoint written for another model stops
  the run before anything is written. With ``batch_plan``, ``data`` is a list
  of datasets (see ``train.fit``)."""
  checkpointer = Checkpointer(workdir, model_config)
  latest = checkpointer.check_compatible()
  tx = train_lib.make_optimizer(config.optimizer, config.learning_rate)
  state = train_lib.create_train_state(model, params, tx)
  if latest is not None:
    state = checkpointer.restore(state, latest)
    print(f"Resumed from the checkpoint at step {latest} in {workdir}.")
  if config.eval_only:
    if latest is None:
      raise SeqjaxError(f"--eval_only: no checkpoint in --workdir={workdir}")
    return state, train_lib.FitStats()
  metrics_log = train_lib.MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  state, stats = train_lib.fit(
      state, data, loss_fn, fit_config or config.fit_config(),
      checkpointer=checkpointer, metrics_log=metrics_log,
      epoch_end_fn=epoch_end_fn, batch_plan=batch_plan)
  checkpointer.save(state)
  checkpointer.close()
  return state, stats
