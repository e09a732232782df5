"""A run's workdir and the files a run writes beside its checkpoints:
creating the workdir (one run at a time), results.json (its common keys,
written by process 0 only, atomically), and the files of a run that failed
before its first checkpoint, removed. ``seqjax.runner`` names these too.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from typing import Any, Callable, Optional

import jax
import numpy as np

import seqjax
from seqjax import reliability
from seqjax import summary as summary_lib
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer
from seqjax.errors import ParameterError


def require_checkpoint(workdir: str) -> None:
  """Evaluating only: a workdir without a checkpoint stops the run before
  it reads the data or writes a file."""
  if latest_step(workdir) is None:
    raise ParameterError("workdir", workdir,
                         "holds no checkpoint to evaluate (eval_only)",
                         mentions=("eval_only",))


def latest_step(workdir: str) -> Optional[int]:
  checkpointer = Checkpointer(workdir, {})
  try:
    return checkpointer.latest_step()
  finally:
    checkpointer.close()


def files_written(workdir: str, save: Callable[[str], None]) -> list[str]:
  """Runs ``save(workdir)``; -> the paths of the files it created (those
  that were not there before)."""
  before = set(os.listdir(workdir))
  save(workdir)
  return [os.path.join(workdir, name)
          for name in sorted(set(os.listdir(workdir)) - before)]


def remove_unless_checkpointed(workdir: str, paths: list[str]) -> None:
  """After a failed run: removes the files it wrote beside a checkpoint
  (``paths``) when it left no checkpoint, so they do not bind a later run
  to a model that was never trained."""
  if paths and latest_step(workdir) is None:
    for path in paths:
      if os.path.isfile(path):
        os.remove(path)


def read_results(workdir: str, name: str = "results.json") -> Optional[dict]:
  """``<workdir>/<name>`` as written by ``write_results``; None when absent
  or unreadable."""
  try:
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def resolve_workdir(config, task: str) -> str:
  """The run's workdir (created): ``config.workdir``, or a fresh
  timestamped one."""
  return make_workdir(default_workdir(config, task))


def default_workdir(config, task: str) -> str:
  return config.workdir or os.path.join(
      "runs", f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def make_workdir(workdir: str) -> str:
  """Creates ``workdir``; a second run on it stops here, at once."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ParameterError("workdir", workdir, "exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except (OSError, ValueError) as e:
    raise ParameterError("workdir", repr(workdir),
                         f"cannot be created: {e}") from e
  reliability.check_workdir_free(workdir)  # a second run stops here, at once
  return workdir


def write_results(workdir: str, results: dict, name: str = "results.json"
                  ) -> None:
  """``<workdir>/<name>``, by process 0 only (one writer for a shared dir)."""
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, name), results)
    print(f"Wrote {os.path.join(workdir, name)}")


def write_json_atomic(path: str, obj: Any) -> None:
  """JSON (numbers and arrays as lists), written atomically."""
  reliability.write_atomic(path, json.dumps(
      obj, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(x):
  if isinstance(x, (np.generic, jax.Array, np.ndarray)):
    return np.asarray(x).tolist()
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


def training_results(stats: train_lib.FitStats, batch_size: int,
                     params) -> dict:
  """The training figures every task's results.json carries."""
  return {
      "train_loss": stats.last_metrics.get("loss"),
      "train_token_accuracy": stats.last_metrics.get("token_accuracy"),
      "train_seconds": stats.train_seconds,
      "first_call_seconds": stats.first_call_seconds,
      "train_samples_per_second": stats.samples_per_second(batch_size),
      "train_compiles": stats.compiles,
      **stats.compile,
      "stopped_on_budget": stats.stopped_on_budget,
      "n_params": summary_lib.count_params(params),
  }
