"""Vectorized training: a group of runs of one model shape in one program.

Runs that differ only in values that keep every array shape (the seed of
their initialisation and data order, the learning rate, the clipping norm)
are trained together: their train states are stacked on a leading member
axis, the one train step is mapped over it with ``jax.vmap`` and jitted once
for the whole group. The hyperparameters live in the optimizer state
(``optax.inject_hyperparams``), so each member has its own and the group
compiles once whatever their values. With several devices the members are
spread over a mesh axis ``runs`` (``make_runs_mesh``): no member's numbers
change, each device trains its share of members.

A research script's ensemble, without the sweep binary::

  from seqjax import train, vectorized
  tx = vectorized.make_optimizer("adam")          # learning_rate in the state
  params_N = [model.init(jax.random.key(s), *inputs) for s in range(8)]
  group = vectorized.init_group(
      model, params_N, tx, [{"learning_rate": lr} for lr in lrs])
  step = vectorized.make_train_step(train.make_seq2seq_loss(model))
  for batch_N in batches:               # each leaf (members, batch, ...)
    group, metrics_N = step(group, batch_N)   # metrics_N["loss"]: (members,)
  lone = vectorized.lone_states(group, train.make_optimizer("adam", lrs[0]))

``lone_states`` gives each member back as the ``TrainState`` a lone run
would hold (the plain optimizer state, no injected hyperparameters), ready
for ``seqjax.checkpoint`` or ``train.fit``. ``fit_group`` is ``train.fit``
for a group: each member keeps its own data order (its ``FitConfig.seed``),
its own metrics rows, checkpoints and non-finite stop, while the group runs
as one call of ``steps_per_call`` steps. ``seqjax.group_runner`` runs a
task's group as the runner runs one configuration.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seqjax import train as train_lib
from seqjax.training import records
from seqjax.errors import SeqjaxError

RUNS_AXIS = "runs"
TrainState = train_lib.TrainState
# The hyperparameters a member may set on its own (the optimizer's state
# holds them); anything else that differs makes another group.
HYPERPARAMS = ("learning_rate", "clip_norm")


# --------------------------------------------------------------------------
# Stacking.


def stack(trees: Sequence[Any]) -> Any:
  """Equally shaped pytrees -> one pytree with a leading member axis."""
  if not trees:
    raise ValueError("stack: no members")
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *trees)


def group_size(tree) -> int:
  return int(jax.tree.leaves(tree)[0].shape[0])


def member(tree, i: int) -> Any:
  """Member ``i`` of a stacked pytree (leading axis dropped)."""
  return jax.tree.map(lambda x: x[i], tree)


def unstack(tree) -> list:
  """A stacked pytree -> its members, on the host (one transfer)."""
  host = jax.device_get(tree)
  return [jax.tree.map(lambda x, i=i: jnp.asarray(np.asarray(x)[i]), host)
          for i in range(group_size(host))]


# --------------------------------------------------------------------------
# Optimizer and states.


def make_optimizer(name: str, clip: bool = False
                   ) -> optax.GradientTransformation:
  """``train.make_optimizer(name, lr, clip_norm=c)``'s transformation with
  its numbers in the state (``optax.inject_hyperparams``): the state holds
  ``learning_rate`` and, with ``clip``, ``clip_norm``, so members of one
  group each have their own. A constant learning rate only (the schedules
  of ``train.LR_SCHEDULES`` close over Python numbers)."""
  if name not in train_lib.OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; expected one of "
                     f"{train_lib.OPTIMIZERS}")

  def build(learning_rate, clip_norm=None):
    tx = train_lib.base_optimizer(name, learning_rate)
    if clip_norm is not None:
      return optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx

  defaults = {"learning_rate": train_lib.DEFAULT_LEARNING_RATES[name]}
  if clip:
    defaults["clip_norm"] = 1.0
  return optax.inject_hyperparams(build)(**defaults)


def hyperparams(optimizer: str, learning_rate: Optional[float],
                clip_norm: float = 0.0) -> dict:
  """A member's hyperparameters as ``make_optimizer`` holds them (None: the
  optimizer's default rate; clip_norm 0: no clipping)."""
  lr = (train_lib.DEFAULT_LEARNING_RATES[optimizer] if learning_rate is None
        else learning_rate)
  return {"learning_rate": lr, **({"clip_norm": clip_norm} if clip_norm > 0
                                  else {})}


def member_state(model_apply, params, tx, hparams: dict,
                 lone_opt_state=None, step: int = 0) -> TrainState:
  """One member's state for ``tx`` (``make_optimizer``): ``hparams`` in the
  optimizer state and, from a lone run (say a restored checkpoint), its
  optimizer state and step."""
  opt = tx.init(params)
  missing = set(opt.hyperparams) ^ set(hparams)
  if missing:
    raise ValueError(f"hyperparameters {sorted(missing)}: the optimizer "
                     f"holds {sorted(opt.hyperparams)}")
  step_ = jnp.asarray(step, jnp.int32)
  opt = opt._replace(hyperparams={k: jnp.asarray(v, jnp.float32)
                                  for k, v in hparams.items()})
  if lone_opt_state is not None:
    opt = opt._replace(count=step_, inner_state=lone_opt_state)
  return TrainState(step=step_, apply_fn=model_apply, params=params, tx=tx,
                    opt_state=opt)


def init_group(model, params: Sequence[Any], tx,
               hparams: Sequence[dict], lone_opt_states=None,
               steps: Optional[Sequence[int]] = None) -> TrainState:
  """The stacked state of a group: member i has ``params[i]`` and
  ``hparams[i]`` (``make_optimizer``'s names), and optionally the optimizer
  state and step of a lone run to continue (``lone_opt_states[i]``,
  ``steps[i]``)."""
  if len(params) != len(hparams):
    raise ValueError(f"{len(params)} parameter sets but {len(hparams)} "
                     "hyperparameter sets")
  n = len(params)
  lone_opt_states = lone_opt_states or [None] * n
  steps = steps or [0] * n
  states = [member_state(model.apply, p, tx, h, o, s) for p, h, o, s in
            zip(params, hparams, lone_opt_states, steps)]
  return stack(states)


def lone_state(state: TrainState, lone_tx=None) -> TrainState:
  """A member's state (unstacked) as a lone run holds it: the optimizer
  state without the injected hyperparameters, ``lone_tx`` as its tx."""
  return state.replace(opt_state=state.opt_state.inner_state,
                       tx=lone_tx if lone_tx is not None else state.tx)


def lone_states(group: TrainState, lone_tx=None) -> list[TrainState]:
  """Every member of ``group`` as a lone run's state (see ``lone_state``)."""
  return [lone_state(s, lone_tx) for s in unstack(group)]


# --------------------------------------------------------------------------
# Placement.


def make_runs_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh (axis ``runs``) over ``num_devices`` devices (0: all): the
  group's members are split over it."""
  devices = jax.devices()
  n = num_devices or len(devices)
  if n > len(devices):
    raise SeqjaxError(f"asked for {n} devices but only {len(devices)} "
                      f"{jax.default_backend()} device(s) are present")
  return Mesh(np.array(devices[:n]), (RUNS_AXIS,))


def runs_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(RUNS_AXIS))


def place(tree, mesh: Optional[Mesh]):
  """A stacked pytree on the device, or split over ``mesh``'s runs."""
  if mesh is None:
    return jax.device_put(tree)
  n = group_size(tree)
  if n % mesh.size:
    raise SeqjaxError(f"{n} members do not divide by the {mesh.size} "
                      "devices of the runs mesh")
  return jax.device_put(tree, runs_sharding(mesh))


# --------------------------------------------------------------------------
# Train steps.


def make_train_step(loss_fn, nonfinite: str = "ignore",
                    shared_batch: bool = False, mesh: Optional[Mesh] = None):
  """-> jitted ``train_step(group, batch) -> (group, metrics)``: the lone
  ``train.make_train_step`` mapped over the members (the group donated).
  Each leaf of ``batch`` and ``metrics`` has the member axis first, unless
  ``shared_batch`` (every member trains on the one batch)."""
  step = jax.vmap(train_lib.make_train_step(loss_fn, nonfinite),
                  in_axes=(0, None if shared_batch else 0))
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  runs = runs_sharding(mesh)
  repl = NamedSharding(mesh, P())
  return jax.jit(step, donate_argnums=0,
                 in_shardings=(runs, repl if shared_batch else runs),
                 out_shardings=runs)


def make_multi_step(loss_fn, nonfinite: str = "ignore",
                    shared_data: bool = False, mesh: Optional[Mesh] = None):
  """-> jitted ``group_call(group, data, idx_NKB, valid_NK, halted_N) ->
  (group, halted_N, metrics_NK)``: ``train.make_multi_step`` for a group.

  Member n runs K steps, step k on ``data[n][idx_NKB[n, k]]`` when
  ``valid_NK[n, k]`` and not ``halted_N[n]`` (skipped steps leave its
  state as it is, their metrics zeros); ``data`` has the member axis first
  unless ``shared_data``. ``nonfinite`` as in ``train.make_train_step``;
  with "stop" a member's non-finite step halts that member alone.
  """
  step = train_lib.make_step(loss_fn, nonfinite)

  def member_call(state, data, idx_KB, valid_K, halted):
    def body(loop, inputs):
      state, halted = loop
      idx_B, valid = inputs
      batch = jax.tree.map(lambda a: a[idx_B], data)
      run = lambda s: step(s, (), batch)[::2]
      _, metric_shapes = jax.eval_shape(run, state)

      def skip(s):
        return s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype),
                               metric_shapes)
      # Batched over members, the cond is a select: a skipped member's
      # state comes back exactly.
      state, metrics = jax.lax.cond(valid & ~halted, run, skip, state)
      if nonfinite == "stop":
        halted = halted | (metrics["nonfinite"] > 0)
      return (state, halted), metrics
    (state, halted), metrics_K = jax.lax.scan(body, (state, halted),
                                              (idx_KB, valid_K))
    return state, halted, metrics_K

  group_call = jax.vmap(member_call,
                        in_axes=(0, None if shared_data else 0, 0, 0, 0))
  group_call.__name__ = f"group_call_{next(train_lib.CALL_IDS)}"
  if mesh is None:
    return jax.jit(group_call, donate_argnums=0)
  runs = runs_sharding(mesh)
  data_sharding = NamedSharding(mesh, P()) if shared_data else runs
  return jax.jit(group_call, donate_argnums=0,
                 in_shardings=(runs, data_sharding, runs, runs, runs),
                 out_shardings=runs)


# --------------------------------------------------------------------------
# The group's fit loop.


class _Call:
  """One group call's metrics (device), fetched to the host once."""

  def __init__(self, metrics_NK):
    self.metrics_NK, self._host = metrics_NK, None

  def host(self) -> dict:
    if self._host is None:
      self._host = {k: np.asarray(v) for k, v in
                    jax.device_get(self.metrics_NK).items()}
    return self._host

  def of(self, i: int) -> dict:
    return {k: v[i] for k, v in self.host().items()}


@dataclasses.dataclass
class MemberResult:
  """What ``fit_group`` hands back per member."""
  stats: train_lib.FitStats
  error: Optional[str] = None       # why it stopped early (non-finite)
  bad_step: Optional[int] = None    # the non-finite step, not applied


class _Member:
  """The host side of one member: its step, its pending metrics, its
  periodic actions (as ``train._Loop`` does for a lone run)."""

  def __init__(self, i, config: train_lib.FitConfig, n: int, step: int,
               checkpointer, metrics_log, save_state: Callable):
    self.i, self.config = i, config
    schedule = train_lib.ShuffledRows(n, config.batch_size, config.shuffle)
    self.spe = schedule.steps_per_epoch
    if self.spe == 0:
      raise ValueError(f"batch_size {config.batch_size} is larger than the "
                       f"{n} training examples")
    self.feed = train_lib.Feed(schedule, config.seed,
                                max(1, config.steps_per_call), None)
    self.total = self.spe * config.epochs
    self.step = self.step_start = step
    self.checkpointer, self.metrics_log = checkpointer, metrics_log
    self.save_state = save_state   # () -> this member's lone state now
    self.pending: list = []        # (call, k)
    self.result = MemberResult(train_lib.FitStats())
    self.t_start = self.t_log = time.perf_counter()
    self.step_log = step

  @property
  def live(self) -> bool:
    return self.result.error is None and self.step < self.total

  def next_boundary(self) -> int:
    ends = [(self.step // self.spe + 1) * self.spe, self.total]
    for every in (self.config.log_every_steps,
                  self.checkpointer and self.config.checkpoint_every_steps):
      if every:
        ends.append((self.step // every + 1) * every)
    return min(ends)

  def due(self, save_by_clock: bool) -> tuple[bool, bool]:
    """-> (log, checkpoint) after this call (as ``train._Loop.due``)."""
    cfg, step = self.config, self.step
    end, epoch_end = step == self.total, step % self.spe == 0
    log = bool(cfg.log_every_steps and step % cfg.log_every_steps == 0)
    ckpt = bool(cfg.checkpoint_every_steps and
                step % cfg.checkpoint_every_steps == 0) or save_by_clock
    ckpt = self.checkpointer is not None and (ckpt or epoch_end or end)
    return log or epoch_end or end, ckpt

  def write_row(self, pending, **fields) -> dict:
    row = records.reduce_rows([(call.of(self.i), k) for call, k in pending])
    row.update(step=fields.pop("step", self.step),
               epoch=fields.pop("epoch", self.step / self.spe), **fields)
    if self.metrics_log:
      self.metrics_log.write(row)
    return row

  def log(self, learning_rate) -> dict:
    now, step = time.perf_counter(), self.step
    rate = (step - self.step_log) / max(now - self.t_log, 1e-9)
    lr = self.config.log_learning_rate
    lr = learning_rate if lr is None else lr
    fields = {}
    if lr is not None:
      fields["learning_rate"] = float(lr(step) if callable(lr) else lr)
    row = self.write_row(self.pending, steps_per_s=rate,
                         samples_per_s=rate * self.config.batch_size,
                         wall_s=now - self.t_start, **fields, time=time.time())
    self.pending, self.result.stats.last_metrics = [], row
    self.t_log, self.step_log = now, step
    return row

  def save(self):
    if self.checkpointer is not None:
      self.checkpointer.save(self.save_state())

  def check(self, call: _Call, k: int, step_before: int) -> bool:
    """Reads ``call``'s non-finite flags; with "stop" a bad step stops this
    member at its last good step (logged, saved). -> whether it stopped."""
    bad_K = call.of(self.i)["nonfinite"][:k] > 0
    if self.config.nonfinite == "stop" and bad_K.any():
      self._stop_nonfinite(call, int(np.argmax(bad_K)), step_before)
      return True
    self.result.stats.nonfinite_skipped += int(bad_K.sum())
    return False

  def _stop_nonfinite(self, call: _Call, j: int, step: int):
    host = call.of(self.i)
    bad, good = step + j + 1, step + j
    loss, grad_norm = float(host["loss"][j]), float(host["grad_norm"][j])
    # The calls before the bad one count, and its steps before the bad step;
    # a later call (read one call late) trained nothing for this member.
    calls = [c for c, _ in self.pending]
    before = self.pending[:calls.index(call)]
    self.write_row(before + [(call, j)], step=good, epoch=good / self.spe,
                   nonfinite_step=bad, nonfinite_loss=str(loss),
                   nonfinite_grad_norm=str(grad_norm))
    self.pending, self.step = [], good
    saved = train_lib.save_last_good(self, good)
    self.result.error = (
        f"Non-finite {train_lib.nonfinite_what(loss, grad_norm)} at step "
        f"{bad} (epoch {bad / self.spe:.2f}): the update was not applied and "
        f"this member stopped (the others of its group went on).{saved}")
    self.result.bad_step = bad
    logging.warning("Member %d: %s", self.i, self.result.error)


def _check_configs(configs: Sequence[train_lib.FitConfig]):
  first = configs[0]
  for name in ("batch_size", "steps_per_call", "nonfinite"):
    values = {getattr(c, name) for c in configs}
    if len(values) > 1:
      raise ValueError(f"a group's members must share {name}; got "
                       f"{sorted(values, key=str)}")
  for c in configs:
    if (c.select_metric is not None or c.patience or c.time_budget_secs or
        c.lr_schedule != "constant"):
      raise ValueError("fit_group trains with a constant learning rate, no "
                       "model selection, patience or time budget")
  return first


def fit_group(group: TrainState, data, loss_fn,
              configs: Sequence[train_lib.FitConfig], *,
              checkpointers: Optional[Sequence[Any]] = None,
              metrics_logs: Optional[Sequence[Any]] = None,
              lone_tx=None, shared_data: bool = False,
              mesh: Optional[Mesh] = None,
              should_stop: Optional[Callable[[], bool]] = None,
              clock: Callable[[], float] = time.monotonic,
              group_call=None,
              ) -> tuple[TrainState, list[MemberResult]]:
  """``train.fit`` for a stacked ``group``: member i trains from its own
  step to ``configs[i].epochs`` epochs on ``data[i]`` (each leaf (members,
  examples, ...); ``shared_data``: one dataset for all) in the order of its
  ``configs[i].seed``, exactly the batches a lone ``train.fit`` gives it.

  Per member, as ``fit`` does: a metrics row (``metrics_logs[i]``) every
  ``log_every_steps`` and at epoch ends; its lone state (``lone_state``
  with ``lone_tx``) saved by ``checkpointers[i]`` every
  ``checkpoint_every_steps``, every ``checkpoint_every_secs`` (one clock
  for the group), at epoch ends and at the end. Members whose steps differ
  (a resume after a save cut short) train the ones behind first, alone,
  until all are level. With ``nonfinite="stop"`` a member's non-finite step
  stops that member only (its last good state kept and saved; the error in
  its ``MemberResult``). ``should_stop()``: every member saves and the call
  returns with ``stats.interrupted``. With ``mesh`` (``make_runs_mesh``)
  the members are split over its devices.
  """
  first = _check_configs(configs)
  n_members = group_size(group)
  if len(configs) != n_members:
    raise ValueError(f"{len(configs)} configs for a group of {n_members}")
  checkpointers = checkpointers or [None] * n_members
  metrics_logs = metrics_logs or [None] * n_members
  n = int(jax.tree.leaves(data)[0].shape[0 if shared_data else 1])
  steps = np.asarray(jax.device_get(group.step)).reshape(-1)
  holder = {"group": group}

  def saver(i):
    return lambda: lone_state(member(holder["group"], i), lone_tx)

  members = [_Member(i, c, n, int(steps[i]), checkpointers[i],
                     metrics_logs[i], saver(i)) for i, c in enumerate(configs)]
  k_max = max(1, first.steps_per_call)
  call_fn = group_call or make_multi_step(loss_fn, first.nonfinite,
                                          shared_data, mesh)
  group = place(group, mesh)
  data = jax.device_put(data) if mesh is None else jax.device_put(
      data, NamedSharding(mesh, P()) if shared_data else runs_sharding(mesh))
  halted = place(np.zeros(n_members, bool), mesh)
  guarded = first.nonfinite != "ignore"
  t_start = time.perf_counter()
  t_first = t_steady = None
  t_ckpt = clock()
  unchecked = None    # (call, {i: (k, step_before)}) not yet read
  steady_steps, calls = 0, 0
  live = [m for m in members if m.live]
  logging.info("Training a group of %d member(s) (%d live), %d steps per "
               "call, from step(s) %s.", n_members, len(live), k_max,
               sorted({m.step for m in live}))

  def read(entry):
    call, active = entry
    for i, (k, before) in active.items():
      m = members[i]
      if m.result.error is None:
        m.check(call, k, before)

  while True:
    live = [m for m in members if m.live]
    if not live:
      break
    low = min(m.step for m in live)
    active = [m for m in live if m.step == low]
    ahead = [m.step for m in live if m.step > low]
    idx = np.zeros((n_members, k_max, first.batch_size), np.int32)
    valid = np.zeros((n_members, k_max), bool)
    ks = {}
    for m in active:
      limit = min([m.next_boundary()] + ahead)
      _, k, (idx_KB, valid_K, _) = m.feed(m.step, limit)
      idx[m.i], valid[m.i], ks[m.i] = idx_KB, valid_K, k
    if t_first is None:
      t_first = time.perf_counter()
    group, halted, metrics_NK = call_fn(group, data, place(idx, mesh),
                                        place(valid, mesh), halted)
    holder["group"] = group
    call = _Call(metrics_NK)
    entry = (call, {m.i: (ks[m.i], m.step) for m in active})
    for m in active:
      m.pending.append((call, ks[m.i]))
      m.step += ks[m.i]
      m.result.stats.steps_run += ks[m.i]
      if calls:
        m.result.stats.steady_steps += ks[m.i]
    if calls == 0:
      jax.block_until_ready(group.step)
      first_seconds = time.perf_counter() - t_first
      t_steady = time.perf_counter()
    calls += 1
    if guarded:
      if unchecked is not None:
        read(unchecked)
      unchecked = entry
    by_clock = bool(first.checkpoint_every_secs and
                    clock() - t_ckpt >= first.checkpoint_every_secs)
    dues = {m.i: m.due(by_clock) for m in active if m.result.error is None}
    if guarded and unchecked is not None and any(
        log or ckpt for log, ckpt in dues.values()):
      read(unchecked)  # before anything is logged or saved
      unchecked = None
    lrs = None
    saved = False
    for m in active:
      if m.result.error is not None or m.i not in dues:
        continue
      log, ckpt = dues[m.i]
      if log:
        if lrs is None:
          lrs = np.asarray(jax.device_get(
              train_lib.learning_rate_of(group.opt_state))).reshape(-1)
        m.log(lrs[m.i])
      if ckpt:
        m.save()
        saved = True
    if saved:
      t_ckpt = clock()
    if any(dues.get(m.i, (False,))[0] for m in active):
      rows = [m.result.stats.last_metrics for m in active
              if m.result.error is None]
      losses = [r.get("loss", float("nan")) for r in rows]
      logging.info("group step %d/%d: %d live, loss %s", low + ks[
          active[0].i], max(m.total for m in members),
          sum(m.live for m in members),
          " ".join(f"{x:.4f}" for x in losses[:8]) +
          (" ..." if len(losses) > 8 else ""))
    if should_stop is not None and any(m.live for m in members) and (
        should_stop()):
      if unchecked is not None:
        read(unchecked)
        unchecked = None
      for m in members:
        if m.result.error is not None:
          continue
        if m.pending:
          m.result.stats.last_metrics = m.write_row(m.pending,
                                                    interrupted=True)
          m.pending = []
        m.save()
        m.result.stats.interrupted = True
      logging.warning("Group stopped on request at step(s) %s.",
                      sorted({m.step for m in members}))
      break
  if unchecked is not None:
    read(unchecked)
  jax.block_until_ready(group.params)
  end = time.perf_counter()
  compiles = train_lib.compiles_of(call_fn)
  for m in members:
    stats = m.result.stats
    stats.train_seconds = end - t_start
    if calls:
      stats.first_call_seconds = first_seconds
      if stats.steady_steps:
        stats.steady_seconds = end - t_steady
    stats.compiles = compiles
  return group, [m.result for m in members]
