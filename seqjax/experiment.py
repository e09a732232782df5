"""Train or resume a model in a workdir: the training half of
``seqjax.runner.run``, for tasks and scripts that build their own state.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional

import jax
import numpy as np

from seqjax import sharding as sharding_lib
from seqjax import reliability
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer
from seqjax.config import DTYPES, TrainingConfig
from seqjax.errors import SeqjaxError


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
