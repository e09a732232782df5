"""What every experiment binary shares: its config, workdir, the train-or-resume
flow and results.json. A task is data + a model choice + this.

Configs are dataclasses whose field names are the binary's flag names
(``experiments.common`` turns them into absl flags), so tests and sweeps build
the same config the command line does.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import tempfile
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from seqjax import sharding as sharding_lib
from seqjax import reliability
from seqjax import summary as summary_lib
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
  num_devices: int = field(0, "Devices the batch is split over (data "
                           "parallel; 0: all devices, of all processes).")
  dtype: str = field("float32", "Compute dtype: float32 or bfloat16 "
                     "(parameters, optimizer state and loss stay float32).")
  coordinator_address: str = field("", "Multi-process: host:port of process "
                                   "0's coordinator (jax.distributed).")
  num_processes: int = field(1, "Multi-process: number of processes.")
  process_id: int = field(0, "Multi-process: this process's index.")
  checkpoint_every_secs: float = field(
      60.0, "Also save a checkpoint when this many seconds have passed since "
      "the last one, so a killed run loses at most about that much (0: off).")
  skip_nonfinite_updates: bool = field(
      False, "Skip a step whose loss or gradients are not finite (counted in "
      "metrics.jsonl) instead of stopping the run there.")

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
    errors += self._validate_devices()
    errors += reliability.training_flag_errors(self)
    return errors

  def _validate_devices(self) -> list[str]:
    errors = []
    if self.dtype not in DTYPES:
      errors.append(f"--dtype must be one of {', '.join(DTYPES)}; got "
                    f"{self.dtype!r}")
    if self.num_processes < 1:
      errors.append(f"--num_processes must be positive; got "
                    f"{self.num_processes}")
    elif not 0 <= self.process_id < self.num_processes:
      errors.append(f"--process_id={self.process_id} must be in "
                    f"[0, --num_processes={self.num_processes})")
    if self.num_processes > 1 and not self.coordinator_address:
      errors.append("--coordinator_address (host:port of process 0) is needed "
                    f"with --num_processes={self.num_processes}")
    if self.num_devices < 0:
      errors.append(f"--num_devices must be >= 0 (0: all); got "
                    f"{self.num_devices}")
      return errors
    # Counting devices starts a backend, which must wait for
    # jax.distributed.initialize in a multi-process run (see check_config).
    if self.num_processes > 1 and not jax.distributed.is_initialized():
      devices = self.num_devices
    else:
      present = jax.device_count()
      if self.num_devices > present:
        errors.append(f"--num_devices={self.num_devices} but only {present} "
                      f"{jax.default_backend()} device(s) are present")
        return errors
      devices = self.num_devices or present
    if devices and self.batch_size > 0 and self.batch_size % devices:
      errors.append(f"--batch_size={self.batch_size} must divide by the "
                    f"{devices} devices of --num_devices={self.num_devices} "
                    "(each device takes an equal slice of the batch)")
    return errors

  def compute_dtype(self):
    """The dtype models compute in (--dtype)."""
    return DTYPES[self.dtype]

  def fit_config(self) -> train_lib.FitConfig:
    return train_lib.FitConfig(
        batch_size=self.batch_size, epochs=self.epochs, seed=self.seed,
        steps_per_call=self.steps_per_call, log_every_steps=self.log_every,
        checkpoint_every_steps=self.checkpoint_every,
        log_learning_rate=(self.learning_rate if self.learning_rate is not
                           None else train_lib.DEFAULT_LEARNING_RATES.get(
                               self.optimizer)))


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_config(config) -> None:
  """Raises a SeqjaxError naming every bad flag. A multi-process run joins its
  processes first, so the device checks see every process's devices."""
  if getattr(config, "num_processes", 1) > 1 and not config.validate():
    sharding_lib.initialize_distributed(
        config.coordinator_address, config.num_processes, config.process_id)
  errors = config.validate()
  if errors:
    raise SeqjaxError("Bad flags:\n  " + "\n  ".join(errors))


def resolve_workdir(config, task: str) -> str:
  """The run's workdir (created): --workdir, or a fresh timestamped one."""
  workdir = config.workdir or os.path.join(
      "runs", f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise SeqjaxError(f"--workdir={workdir} exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except (OSError, ValueError) as e:
    raise SeqjaxError(f"--workdir={workdir!r} cannot be created: {e}") from e
  reliability.check_workdir_free(workdir)  # a second run stops here, at once
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
      f.flush()
      os.fsync(f.fileno())  # the data is on disk before the rename
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


def training_results(stats: train_lib.FitStats, batch_size: int,
                     params) -> dict:
  """The training figures every task's results.json carries."""
  return {
      "train_loss": stats.last_metrics.get("loss"),
      "train_seconds": stats.train_seconds,
      "first_call_seconds": stats.first_call_seconds,
      "train_samples_per_second": stats.samples_per_second(batch_size),
      "train_compiles": stats.compiles,
      "n_params": summary_lib.count_params(params),
  }


def train_or_restore(*, model, params, config: TrainingConfig, workdir: str,
                     model_config: dict, data: dict[str, np.ndarray],
                     loss_fn: train_lib.LossFn,
                     epoch_end_fn: Optional[Callable] = None,
                     fit_config: Optional[train_lib.FitConfig] = None,
                     initial_carry=None, reset_every: int = 0,
                     batch_plan: Optional[train_lib.BucketPlan] = None,
                     ) -> tuple[train_lib.TrainState, train_lib.FitStats]:
  """Builds the train state, resumes from ``workdir`` and trains (or, with
  ``--eval_only``, only restores). A checkpoint written for another model stops
  the run before anything is written. ``initial_carry`` / ``reset_every``:
  stateful training (see ``seqjax.train.fit``): the carry is checkpointed
  with the state and resumed. With ``batch_plan``, ``data``
  is a list of datasets (length buckets; see ``train.fit``). Ctrl-C saves a checkpoint and
  raises ``reliability.TrainingInterrupted``; a damaged checkpoint is
  skipped."""
  dtype = getattr(config, "dtype", "float32")
  if dtype != "float32" and getattr(model, "dtype", None) != DTYPES[dtype]:
    # A task must pass config.compute_dtype() to its model; never ignore it.
    raise SeqjaxError(f"--dtype={dtype}: this task's model "
                      f"({type(model).__name__}) does not compute in it")
  return _train_or_restore_locked(
      model=model, params=params, config=config, workdir=workdir,
      model_config=model_config, data=data, loss_fn=loss_fn,
      epoch_end_fn=epoch_end_fn, fit_config=fit_config,
      initial_carry=initial_carry, reset_every=reset_every,
      batch_plan=batch_plan)


@reliability.exclusive_workdir  # one run per workdir; see reliability.py
def _train_or_restore_locked(*, model, params, config, workdir, model_config,
                              data, loss_fn, epoch_end_fn, fit_config,
                              initial_carry, reset_every, batch_plan):
  checkpointer = Checkpointer(workdir, model_config)
  latest = checkpointer.check_compatible()
  tx = train_lib.make_optimizer(config.optimizer, config.learning_rate)
  state = train_lib.create_train_state(model, params, tx)
  num_devices = getattr(config, "num_devices", 1)
  if initial_carry is not None and num_devices == 0:
    num_devices = 1  # stateful streams run on one device (seqjax.train.fit)
  mesh = sharding_lib.mesh_or_none(num_devices)
  if mesh is not None:
    # Restored arrays take the target's sharding: replicated on the mesh.
    state = sharding_lib.replicate(state, mesh)
  carry = initial_carry
  if latest is not None:
    state, carry = checkpointer.restore_with_carry(state, initial_carry,
                                                   latest)
    print(f"Resumed from the checkpoint at step {int(state.step)} in "
          f"{workdir}.")
  if config.eval_only:
    if latest is None:
      raise SeqjaxError(f"--eval_only: no checkpoint in --workdir={workdir}")
    return sharding_lib.local_copy(state), train_lib.FitStats()
  # One writer for the shared log when several processes train together.
  metrics_log = train_lib.MetricsLog(
      os.path.join(workdir, "metrics.jsonl") if jax.process_index() == 0
      else None)
  if mesh is not None and epoch_end_fn is not None:
    # Evaluation code is written for one device: hand it a local copy.
    user_epoch_end_fn = epoch_end_fn
    epoch_end_fn = lambda s, e: user_epoch_end_fn(sharding_lib.local_copy(s), e)
  fit_config = reliability.with_reliability_flags(
      fit_config or config.fit_config(), config)
  reliability.check_fit_size(fit_config, data)
  if metrics_log.path is not None:
    reliability.prepare_resume(metrics_log.path, int(state.step))
  with reliability.InterruptGuard() as interrupt:
    state, stats = train_lib.fit(
        state, data, loss_fn, fit_config,
        checkpointer=checkpointer, metrics_log=metrics_log,
        epoch_end_fn=epoch_end_fn, initial_carry=initial_carry, carry=carry,
        reset_every=reset_every, mesh=mesh, should_stop=interrupt.requested,
        batch_plan=batch_plan)
  checkpointer.save(state, carry=stats.final_carry)
  checkpointer.close()
  if interrupt.requested():
    raise reliability.TrainingInterrupted(int(state.step), workdir,
                                          interrupt.signum)
  state = sharding_lib.local_copy(state)
  prefix = (f"[process {jax.process_index()}/{jax.process_count()}] "
            if jax.process_count() > 1 else "")
  print(f"{prefix}Parameters at step {int(state.step)}: sha256 "
        f"{params_fingerprint(state.params)}")
  return state, stats


def params_fingerprint(params) -> str:
  """sha256 of every parameter's bytes (in tree order): equal parameters on
  every process, or across reruns with one seed, have equal fingerprints."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
