"""Runs a task's configurations as one vectorized group (``seqjax.vectorized``)
and writes each member's workdir exactly as ``seqjax.runner.run`` writes a
lone run's: ``metrics.jsonl``, ``tb/``, ``checkpoints/``, ``results.json``
(with a ``vectorized`` key: the group's size and throughput). A member's
printed lines (the parameter table, its accuracy, examples) go to its
``<workdir>/log.txt``; the group's training log to the caller's stderr.

Which configurations can share a group: ``group_key`` is every flag but
the member flags (``MEMBER_FLAGS``: the seed, the learning rate, the
clipping norm, and a task's own ``Task.member_flags``, e.g. reverse's
evaluation sizes); configurations with equal keys keep every array shape
and train as one group. ``vectorize_errors`` names the flags whose values
the vectorized path cannot honour (a learning-rate schedule, model
selection, a time budget, ``--eval_only``), and a task that has not declared
``Task.vectorizable``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from typing import Any, Optional, Sequence

import jax
import numpy as np

from seqjax import reliability
from seqjax import runner
from seqjax import summary as summary_lib
from seqjax import train as train_lib
from seqjax import vectorized
from seqjax.checkpoint import Checkpointer
from seqjax.errors import SeqjaxError

# Values a member sets alone: its seed (initialisation, data, order) and
# the optimizer's numbers (in the optimizer state). clip_norm's on/off
# changes the optimizer's structure, so it is in the key.
MEMBER_FLAGS = ("seed", "learning_rate", "clip_norm")
# Set per run by the sweep; never part of the key.
PER_RUN = ("workdir",)


def member_flags(task) -> tuple[str, ...]:
  return MEMBER_FLAGS + tuple(getattr(task, "member_flags", ()))


def group_key(task, config) -> tuple:
  """Configurations with equal keys train as one group."""
  skip = set(member_flags(task)) | set(PER_RUN)
  values = dataclasses.asdict(config)
  key = tuple((k, repr(v)) for k, v in sorted(values.items()) if k not in skip)
  return key + (("clips", getattr(config, "clip_norm", 0.0) > 0),)


def split_groups(task, configs: Sequence[Any]) -> list[list[int]]:
  """Indices of ``configs`` by group (first appearance order)."""
  groups: dict[tuple, list[int]] = {}
  for i, config in enumerate(configs):
    groups.setdefault(group_key(task, config), []).append(i)
  return list(groups.values())


def vectorize_errors(task, config) -> list[str]:
  """Messages naming what ``config`` sets that a vectorized group cannot
  train (empty: it can)."""
  if not getattr(task, "vectorizable", False):
    return [f"task {task.name} cannot train vectorized yet (its runs go one "
            "after another without --vectorize); vectorized tasks: reverse"]
  checks = (
      ("eval_only", lambda v: not v, "evaluates a checkpoint; nothing to "
       "train"),
      ("lr_schedule", lambda v: v == "constant", "a vectorized group trains "
       "with a constant learning rate per member"),
      ("patience", lambda v: not v, "early stopping needs the task's select "
       "metric, which a group does not track"),
      ("keep_best", lambda v: not v, "model selection is not tracked in a "
       "group"),
      ("train_minutes", lambda v: not v, "a time budget is not kept in a "
       "group"),
      ("num_processes", lambda v: v == 1, "a group runs in one process"),
  )
  errors = []
  for name, ok, why in checks:
    if hasattr(config, name) and not ok(getattr(config, name)):
      errors.append(f"--{name}={getattr(config, name)}: {why}")
  return errors


def setup_errors(setup) -> list[str]:
  wanted = [what for what, on in (
      ("length buckets (batch_plan)", setup.batch_plan is not None),
      ("stateful training (initial_carry)", setup.initial_carry is not None),
      ("an epoch-end evaluation", setup.epoch_end is not None),
      ("a select metric", setup.select_metric is not None)) if on]
  return [f"this configuration uses {w}, which a vectorized group does not "
          "train" for w in wanted]


def _mesh(config, n_members: int):
  """The runs mesh: --num_devices devices (0: as many of them as divide
  the members), None for one."""
  wanted = getattr(config, "num_devices", 0)
  n = wanted or math.gcd(n_members, jax.device_count())
  if n_members % n:
    raise SeqjaxError(f"--num_devices={wanted}: the group's {n_members} "
                      "members do not divide by it")
  return None if n == 1 else vectorized.make_runs_mesh(n)


# --------------------------------------------------------------------------
# Memory.


def available_bytes(num_devices: int = 0) -> tuple[int, str]:
  """-> (bytes a group may use, where): the devices' memory (their
  ``bytes_limit``), or the host's available memory on CPU."""
  devices = jax.devices()[:num_devices or None]
  stats = [d.memory_stats() for d in devices] if devices[0].platform != (
      "cpu") else []
  if stats and all(s and "bytes_limit" in s for s in stats):
    return (sum(s["bytes_limit"] for s in stats),
            f"{len(devices)} {devices[0].platform} device(s)")
  try:
    with open("/proc/meminfo") as f:
      info = dict(l.split(":", 1) for l in f)
    return int(info["MemAvailable"].split()[0]) * 1024, "available host memory"
  except (OSError, KeyError, ValueError):
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), (
        "available host memory")


def member_bytes(task, config) -> int:
  """Device bytes one member of ``config``'s group needs: the arguments and
  temporaries of a one-member group call as XLA compiles it (its state,
  data, K steps' activations). Nothing is trained."""
  setup = task.setup(config, config.workdir)
  params = jax.eval_shape(setup.model.init, jax.random.key(0),
                          *setup.init_inputs)
  fit_config = setup.fit_config or config.fit_config()
  tx = vectorized.make_optimizer(config.optimizer,
                                 clip=getattr(config, "clip_norm", 0) > 0)
  hp = vectorized.hyperparams(config.optimizer, config.learning_rate,
                              getattr(config, "clip_norm", 0.0))
  state = jax.eval_shape(
      lambda p: vectorized.init_group(setup.model, [p], tx, [hp]), params)
  data = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape, a.dtype),
                      setup.train)
  k, b = max(1, fit_config.steps_per_call), fit_config.batch_size
  call = vectorized.make_multi_step(setup.loss_fn, fit_config.nonfinite)
  compiled = call.lower(
      state, data, jax.ShapeDtypeStruct((1, k, b), np.int32),
      jax.ShapeDtypeStruct((1, k), bool),
      jax.ShapeDtypeStruct((1,), bool)).compile()
  mem = compiled.memory_analysis()
  if mem is None:  # a backend without the analysis: arguments, 4x the state
    arg = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
        (state, data)))
    return int(arg + 3 * summary_lib.count_params(params) * 4)
  return int(mem.argument_size_in_bytes + mem.temp_size_in_bytes +
             mem.output_size_in_bytes - mem.alias_size_in_bytes)


# --------------------------------------------------------------------------
# Running a group.


@contextlib.contextmanager
def _member_output(workdir: Optional[str], to_log: bool):
  """stdout into ``<workdir>/log.txt`` (appended) while a member prints."""
  if not to_log or not workdir:
    yield
    return
  with open(os.path.join(workdir, "log.txt"), "a", encoding="utf-8") as f, \
      contextlib.redirect_stdout(f):
    yield
    f.flush()


@dataclasses.dataclass
class _Prepared:
  config: Any
  setup: Any
  model_config: dict
  checkpointer: Checkpointer
  fit_config: train_lib.FitConfig
  tx: Any
  state: train_lib.TrainState
  params0: Any


def _prepare(task, config, to_log: bool) -> _Prepared:
  runner.check(config)
  workdir = config.workdir
  with _member_output(workdir, to_log):
    setup = task.setup(config, workdir)
  errors = setup_errors(setup)
  if errors:
    raise SeqjaxError("; ".join(errors))
  model_config = runner.checkpoint_config(setup.model_config, config)
  checkpointer = Checkpointer(workdir, model_config)
  latest = checkpointer.check_compatible()
  if setup.save_files is not None:
    setup.save_files(workdir)
  with _member_output(workdir, to_log):
    params = runner.init_params(task, setup, config.seed)
    print(summary_lib.format_summary(params, title=setup.title))
    fit_config = setup.fit_config or config.fit_config()
    tx = runner.make_tx(config, fit_config, setup.train, None, False, 0)
    state = train_lib.create_train_state(setup.model, params, tx)
    if latest is not None:
      state = checkpointer.restore(state, latest)
      print(f"Resumed from the checkpoint at step {int(state.step)} in "
            f"{workdir} (vectorized group).")
  return _Prepared(config, setup, model_config, checkpointer, fit_config, tx,
                   state, params)


def _check_same_shapes(prepared: list[_Prepared]):
  sig = lambda p: jax.tree.map(lambda x: (x.shape, str(x.dtype)),
                               (p.state.params, p.setup.train))
  first = sig(prepared[0])
  for p in prepared[1:]:
    if sig(p) != first:
      raise SeqjaxError(f"{p.config.workdir}: its parameters or data differ "
                        "in shape from its group's first member; it cannot "
                        "be stacked")


def run_group(task, configs: Sequence[Any], to_log: bool = True
              ) -> list[Optional[str]]:
  """Trains (or resumes) ``configs`` (one group: ``split_groups``) together
  and evaluates each member; -> each member's error (None: done, its
  results.json written). A non-finite member is stopped alone; its error
  names it. Ctrl-C / SIGTERM: every member saves, then
  ``reliability.TrainingInterrupted``."""
  for config in configs:
    errors = vectorize_errors(task, config)
    if errors:
      raise SeqjaxError(f"{config.workdir}: " + "; ".join(errors))
  keys = {group_key(task, c) for c in configs}
  if len(keys) != 1:
    raise SeqjaxError("these configurations differ in more than the member "
                      f"flags ({', '.join(member_flags(task))}); split them "
                      "with group_runner.split_groups")
  with contextlib.ExitStack() as stack:
    for config in configs:
      runner.make_workdir(config.workdir)
      stack.enter_context(reliability.WorkdirLock(config.workdir))
    return _run_locked(task, configs, to_log, stack)


def _run_locked(task, configs, to_log, stack) -> list[Optional[str]]:
  prepared = [_prepare(task, c, to_log) for c in configs]
  _check_same_shapes(prepared)
  first = prepared[0]
  clips = getattr(first.config, "clip_norm", 0.0) > 0
  tx = vectorized.make_optimizer(first.config.optimizer, clip=clips)
  group = vectorized.init_group(
      first.setup.model, [p.state.params for p in prepared], tx,
      [vectorized.hyperparams(p.config.optimizer, p.config.learning_rate,
                              getattr(p.config, "clip_norm", 0.0))
       for p in prepared],
      [p.state.opt_state for p in prepared],
      [int(p.state.step) for p in prepared])
  for p in prepared:
    reliability.check_fit_size(p.fit_config, p.setup.train)
  data = vectorized.stack([p.setup.train for p in prepared])
  mesh = _mesh(first.config, len(prepared))
  logs = [stack.enter_context(runner.open_logs(p.config.workdir,
                                               int(p.state.step), p.config))
          for p in prepared]
  with reliability.InterruptGuard() as interrupt:
    group, member_results = vectorized.fit_group(
        group, data, first.setup.loss_fn, [p.fit_config for p in prepared],
        checkpointers=[p.checkpointer for p in prepared], metrics_logs=logs,
        mesh=mesh, should_stop=interrupt.requested)
  states = vectorized.unstack(group)
  errors = []
  n_members = len(prepared)
  group_rate = sum(r.stats.samples_per_second(first.fit_config.batch_size)
                   for r in member_results)
  for p, member_state, result in zip(prepared, states, member_results):
    state = vectorized.lone_state(member_state, p.tx)
    if result.error is None:
      p.checkpointer.save(state)
    p.checkpointer.close()
    if result.error is not None:
      errors.append(f"{result.error} {runner._step_size_flags(p.config)}")  # pylint: disable=protected-access
      continue
    errors.append(None)
  if interrupt.requested():
    raise reliability.TrainingInterrupted(
        min(int(s.step) for s in states),
        os.path.dirname(first.config.workdir) or first.config.workdir,
        interrupt.signum)
  for p, member_state, result, error in zip(prepared, states,
                                            member_results, errors):
    if error is not None:
      continue
    state = vectorized.lone_state(member_state, p.tx)
    with _member_output(p.config.workdir, to_log):
      print(f"Parameters at step {int(state.step)}: sha256 "
            f"{runner.params_fingerprint(state.params)}")
      results = runner.base_results(task.name, p.config)
      results.update(workdir=p.config.workdir, step=int(state.step))
      results.update(task.evaluate(p.config, p.setup, state))
      results.update(runner.training_results(
          result.stats, p.fit_config.batch_size, p.params0))
      results["vectorized"] = {
          "members": n_members, "devices": 1 if mesh is None else mesh.size,
          "group_samples_per_second": group_rate}
      runner.write_results(p.config.workdir, results)
  return errors
