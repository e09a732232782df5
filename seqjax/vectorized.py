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
for a group, in the same loop with the same hooks (``seqjax.training.
members``): each member keeps its own data order (its ``FitConfig.seed``),
its own metrics rows, checkpoints and non-finite stop, while the group runs
as one call of ``steps_per_call`` steps. ``seqjax.group_runner`` runs a
task's group as the runner runs one configuration.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seqjax import train as train_lib
from seqjax.training import members as members_lib
from seqjax.training import standard
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
  call = train_lib.train_call_fn(loss_fn, nonfinite)

  def member_call(state, data, idx_KB, valid_K, halted):
    # Batched over members, the call's cond is a select: a skipped member's
    # state comes back exactly.
    reset_K = jnp.zeros(valid_K.shape, bool)   # no carry to reset
    state, _, halted, metrics_K = call(state, (), data, idx_KB, valid_K,
                                       reset_K, halted)
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
# The group in the one loop.


@dataclasses.dataclass
class MemberResult:
  """What ``fit_group`` hands back per member."""
  stats: train_lib.FitStats
  error: Optional[str] = None       # why it stopped early (non-finite)


def _check_configs(configs: Sequence[train_lib.FitConfig]):
  for name in ("batch_size", "steps_per_call", "nonfinite"):
    values = {getattr(c, name) for c in configs}
    if len(values) > 1:
      raise ValueError(f"a group's members must share {name}; got "
                       f"{sorted(values, key=str)}")
  for c in configs:
    if c.lr_schedule != "constant":
      raise ValueError("fit_group trains with a constant learning rate per "
                       "member")
  return configs[0]


def fit_group(group: TrainState, data, loss_fn,
              configs: Sequence[train_lib.FitConfig], *,
              checkpointers: Optional[Sequence[Any]] = None,
              metrics_logs: Optional[Sequence[Any]] = None,
              lone_tx=None, shared_data: bool = False,
              mesh: Optional[Mesh] = None,
              should_stop: Optional[Callable[[], bool]] = None,
              clock: Callable[[], float] = time.monotonic,
              group_call=None, epoch_end_fns: Optional[Sequence] = None,
              selections: Optional[Sequence] = None,
              best_checkpoints: Optional[Sequence] = None,
              batch_plan: Optional[train_lib.BucketPlan] = None,
              ) -> tuple[TrainState, list[MemberResult]]:
  """``train.fit`` for a stacked ``group``, in the one loop
  (``training.members``): member i trains from its own step to
  ``configs[i].epochs`` epochs on ``data[i]`` (each leaf (members,
  examples, ...); ``shared_data``: one dataset for all) in the order of its
  ``configs[i].seed``, exactly the batches a lone ``train.fit`` gives it,
  with the hooks a lone run of ``configs[i]`` has (``standard_hooks``): its
  metrics rows (``metrics_logs[i]``), its lone state (``lone_state`` with
  ``lone_tx``) saved by ``checkpointers[i]``, ``epoch_end_fns[i]`` with
  model selection (``selections[i]``, ``best_checkpoints[i]``), patience,
  time budget. With ``batch_plan``, ``data`` is a list of such datasets
  (length buckets), each member in its own order. With
  ``nonfinite="stop"`` a member's non-finite step stops that member only (its error in its ``MemberResult``). ``should_stop()``,
  asked once per call: every member saves and stops (``stats.interrupted``).
  With ``mesh`` (``make_runs_mesh``) the members are split over its devices.
  """
  first = _check_configs(configs)
  n_members = group_size(group)
  if len(configs) != n_members:
    raise ValueError(f"{len(configs)} configs for a group of {n_members}")
  per = lambda xs: list(xs) if xs is not None else [None] * n_members
  checkpointers, metrics_logs = per(checkpointers), per(metrics_logs)
  epoch_end_fns, selections = per(epoch_end_fns), per(selections)
  best_checkpoints = per(best_checkpoints)
  rows = {"n": np.zeros(int(jax.tree.leaves(data)[0].shape[
      0 if shared_data else 1]))}
  call = group_call or make_multi_step(loss_fn, first.nonfinite,
                                       shared_data, mesh)
  k_max = max(1, first.steps_per_call)
  steps, hooks, done = [], [], []
  for i, c in enumerate(configs):
    schedule = train_lib.make_schedule(rows, c, batch_plan)
    steps.append(members_lib.MemberStep(schedule, c.seed, k_max, call))
    tracker = standard.selection_tracker(member(group, i), c, selections[i],
                                         best_checkpoints[i])
    done.append(standard.nothing_to_train(
        member(group, i), c, schedule.steps_per_epoch, tracker))
    hooks.append(train_lib.standard_hooks(
        c, checkpointer=checkpointers[i], epoch_end_fn=epoch_end_fns[i],
        tracker=tracker, best_checkpoint=best_checkpoints[i], clock=clock))
  data = jax.device_put(data) if mesh is None else jax.device_put(
      data, NamedSharding(mesh, P()) if shared_data else runs_sharding(mesh))
  group, loops = members_lib.fit_members(
      place(group, mesh), data, call, steps, hooks,
      [c.epochs for c in configs], metrics_logs=metrics_logs,
      lone=lambda s: lone_state(s, lone_tx),
      place=lambda x: place(x, mesh), should_stop=should_stop, done=done)
  return group, [MemberResult(l.stats, l.error) for l in loops]
