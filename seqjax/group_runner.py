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
and train as one group, in the one training loop with a lone run's hooks
(evaluation, model selection, patience, time budget, checkpoints).
``vectorize_errors`` names the flags whose values a group cannot honour (a
learning-rate schedule, ``--eval_only``, several processes);
``setup_errors`` a stateful setup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from seqjax import reliability
from seqjax import runner
from seqjax import selected as selected_lib
from seqjax import summary as summary_lib
from seqjax import train as train_lib
from seqjax import vectorized
from seqjax import selection as selection_lib
from seqjax.best_checkpoint import BestCheckpoint
from seqjax.checkpoint import Checkpointer
from seqjax.errors import ParameterError, SeqjaxError

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
  checks = (
      ("eval_only", lambda v: not v, "evaluates a checkpoint; nothing to "
       "train"),
      ("lr_schedule", lambda v: v == "constant", "a vectorized group trains "
       "with a constant learning rate per member"),
      ("num_processes", lambda v: v == 1, "a group runs in one process"),
      ("stateful", lambda v: not v, "stateful training (the carry kept "
       "between batches) is not trained in a group"),
  )
  errors = []
  for name, ok, why in checks:
    if hasattr(config, name) and not ok(getattr(config, name)):
      errors.append(f"--{name}={getattr(config, name)}: {why}")
  return errors


def setup_errors(setup) -> list[str]:
  """What a task's setup asks that a group cannot train."""
  if setup.initial_carry is not None:
    return ["this configuration uses stateful training (initial_carry), "
            "which a vectorized group does not train"]
  return []


def _mesh(config, n_members: int):
  """The runs mesh: ``config.num_devices`` devices (0: as many of them as
  divide the members), None for one."""
  wanted = getattr(config, "num_devices", 0)
  n = wanted or math.gcd(n_members, jax.device_count())
  if n_members % n:
    raise ParameterError("num_devices", wanted, f"the group's {n_members} "
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
  train = setup.train
  if isinstance(train, list):  # length buckets: the call of the largest
    train = max(train, key=lambda b: sum(a.size for a in b.values()))
  data = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape, a.dtype),
                      train)
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
  tracker: Any = None               # model selection's record, resumed
  best: Any = None                  # the best epoch's checkpoint


def _prepare(task, config, to_log: bool) -> _Prepared:
  runner.check(config)
  workdir = config.workdir
  with _member_output(workdir, to_log):
    setup = task.setup(config, workdir)
  errors = setup_errors(setup) + selected_lib.selection_errors(
      config, setup.select_metric, task.name)
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
    tx = runner.make_tx(config, fit_config, setup.train, setup.batch_plan,
                        False, 0)
    state = train_lib.create_train_state(setup.model, params, tx)
    if latest is not None:
      state = checkpointer.restore(state, latest)
      print(f"Resumed from the checkpoint at step {int(state.step)} in "
            f"{workdir} (vectorized group).")
  prepared = _Prepared(config, setup, model_config, checkpointer, fit_config,
                       tx, state, params)
  if setup.select_metric is not None:
    _prepare_selection(prepared, latest)
  return prepared


def _prepare_selection(p: _Prepared, latest):
  """The member's selection record (resumed) and best checkpoint, as
  ``runner.train_or_restore`` makes them for a lone run."""
  setup, step = p.setup, int(p.state.step)
  p.fit_config = dataclasses.replace(
      p.fit_config, select_metric=setup.select_metric,
      select_maximize=setup.select_maximize)
  p.tracker = selection_lib.Tracker.from_json(
      p.checkpointer.saved_selection(step) if latest is not None else None,
      setup.select_metric, setup.select_maximize)
  if selected_lib.keeps_best(p.config, setup.select_metric):
    p.best = BestCheckpoint(p.config.workdir, p.model_config)
    if p.tracker.best_step == step and p.best.step() != step:
      p.best.save(p.state, p.tracker)  # killed between the two saves


def _check_same_shapes(prepared: list[_Prepared]):
  sig = lambda p: (jax.tree.map(lambda x: (x.shape, str(x.dtype)),
                                (p.state.params, p.setup.train)),
                   p.setup.batch_plan)
  first = sig(prepared[0])
  for p in prepared[1:]:
    if sig(p) != first:
      raise SeqjaxError(f"{p.config.workdir}: its parameters, data or "
                        "length buckets differ in shape from its group's "
                        "first member; it cannot be stacked")


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
  if (getattr(prepared[0].setup.loss_fn, "takes_step", False) and
      len({p.config.seed for p in prepared}) > 1):
    # The group trains with its first member's loss, whose dropout masks
    # come from that member's seed.
    dropout = getattr(prepared[0].config, "dropout", None)
    raise ParameterError("dropout", dropout, "members of one group with "
                         "other seeds would share the first one's dropout "
                         "masks; train them as lone runs")
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
  if first.setup.batch_plan is None:
    data = vectorized.stack([p.setup.train for p in prepared])
  else:  # a list of buckets, each stacked
    data = [vectorized.stack(list(b)) for b in
            zip(*[p.setup.train for p in prepared])]
  mesh = _mesh(first.config, len(prepared))
  logs = [stack.enter_context(runner.open_logs(p.config.workdir,
                                               int(p.state.step), p.config))
          for p in prepared]
  with reliability.InterruptGuard() as interrupt:
    group, member_results = vectorized.fit_group(
        group, data, first.setup.loss_fn, [p.fit_config for p in prepared],
        checkpointers=[p.checkpointer for p in prepared], metrics_logs=logs,
        mesh=mesh, should_stop=interrupt.requested,
        epoch_end_fns=[p.setup.epoch_end for p in prepared],
        selections=[p.tracker for p in prepared],
        best_checkpoints=[p.best for p in prepared],
        batch_plan=first.setup.batch_plan)
  states = vectorized.unstack(group)
  errors = []
  n_members = len(prepared)
  group_rate = sum(r.stats.samples_per_second(first.fit_config.batch_size)
                   for r in member_results)
  for p, member_state, result in zip(prepared, states, member_results):
    state = vectorized.lone_state(member_state, p.tx)
    if result.error is None:
      p.checkpointer.save(state, selection=result.stats.selection)
    p.checkpointer.close()
    if p.best is not None:
      p.best.close()
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
            f"{summary_lib.params_fingerprint(state.params)}")
      results = runner.base_results(task.name, p.config)
      results.update(workdir=p.config.workdir, step=int(state.step))
      state, selected = selected_lib.selected_state(
          p.config.workdir, p.model_config, p.config, p.setup, state,
          result.stats)
      results.update(selected)
      results.update(task.evaluate(p.config, p.setup, state))
      results.update(runner.training_results(
          result.stats, p.fit_config.batch_size, p.params0))
      results["vectorized"] = {
          "members": n_members, "devices": 1 if mesh is None else mesh.size,
          "group_samples_per_second": group_rate}
      runner.write_results(p.config.workdir, results)
  return errors
