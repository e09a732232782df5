"""Pure train / eval steps, optimizers and the one fit loop every task shares.

* ``train_step(state, batch) -> (state, metrics)`` is pure; ``jit_train_step``
  compiles it once with the state donated.
* At small batches the cost of a step is dispatch, not arithmetic, so ``fit``
  runs ``steps_per_call`` steps per jitted call: a ``lax.scan`` over batch
  indices into the training set, which lives on the device. A call that would
  cross an epoch, log or checkpoint boundary runs fewer real steps (the rest
  are skipped by ``lax.cond``), so the scan always has the same shape and the
  step compiles exactly once.
* The data order is a function of (seed, epoch) alone, so a run resumed from a
  checkpoint sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seqjax import metrics as metrics_lib
from seqjax import stateful as stateful_lib
from seqjax import sharding as sharding_lib
from seqjax.errors import SeqjaxError
from seqjax import reliability

TrainState = train_state.TrainState
Batch = dict[str, Any]
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]
# Stateful: loss_fn(params, batch, carry) -> (loss, (metrics, new_carry)).
StatefulLossFn = Callable[[Any, Batch, Any],
                          tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
# What a step does with a non-finite loss, gradient or updated parameter:
# "ignore" applies it (the plain step), "stop" leaves the state at the last
# good step and fit() stops there, "skip" drops the update and goes on.
NONFINITE_MODES = ("ignore", "stop", "skip")
# Keras' default learning rates, so a flag left alone means the tutorial's.
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}


def make_optimizer(name: str, learning_rate: Optional[float] = None
                   ) -> optax.GradientTransformation:
  """adam / rmsprop / sgd with Keras' defaults (epsilon 1e-7, rho 0.9)."""
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
  lr = DEFAULT_LEARNING_RATES[name] if learning_rate is None else learning_rate
  if name == "adam":
    return optax.adam(lr, eps=1e-7)
  if name == "rmsprop":
    return optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False)
  return optax.sgd(lr)


def create_train_state(model, params, tx) -> TrainState:
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  # A Python-int step is weakly typed; the step after one update is not, which
  # would compile the train step twice.
  return state.replace(step=jnp.zeros((), jnp.int32))


def make_seq2seq_loss(model) -> LossFn:
  """Teacher-forced loss of a ``Seq2Seq``-like model.

  The batch holds ``src`` (B, S), ``dec_in`` (B, T), ``target`` (B, T) and
  optionally ``src_mask`` / ``target_mask`` (padding False). A model with
  ``teacher_forced = False`` (``RepeatVectorSeq2Seq``) is called on the source
  alone and needs no ``dec_in``.
  """
  teacher_forced = getattr(model, "teacher_forced", True)

  def loss_fn(params, batch):
    mask = batch.get("target_mask")
    if teacher_forced:
      logits_BTV = model.apply(params, batch["src"], batch["dec_in"],
                               batch.get("src_mask"), mask)
    else:
      logits_BTV = model.apply(params, batch["src"], batch.get("src_mask"))
    loss = metrics_lib.masked_cross_entropy(logits_BTV, batch["target"], mask)
    pred_BT = jnp.argmax(logits_BTV, axis=-1)
    acc = metrics_lib.masked_token_accuracy(pred_BT, batch["target"], mask)
    return loss, {"token_accuracy": acc}

  return loss_fn


def make_classifier_loss(model, stateful: bool = False):
  """Cross-entropy of a ``RecurrentClassifier``-like model.

  The batch holds ``x`` (B, T) token ids, ``y`` targets (B,) or, for a
  per-step model, (B, T), and optionally ``x_mask`` (missing input steps
  False) and ``y_mask`` (missing targets False). ``stateful=True`` gives the
  stateful signature ``loss_fn(params, batch, carry) -> (loss, (metrics,
  carry))`` for ``fit(..., initial_carry=)``; otherwise every batch starts
  from the zero carry.
  """

  def outputs(params, batch, carry):
    logits, carry = model.apply(params, batch["x"], carry, batch.get("x_mask"))
    mask = batch.get("y_mask")
    loss = metrics_lib.masked_cross_entropy(logits, batch["y"], mask)
    acc = metrics_lib.masked_token_accuracy(
        jnp.argmax(logits, axis=-1), batch["y"], mask)
    return loss, {"token_accuracy": acc}, carry

  if stateful:
    def stateful_loss_fn(params, batch, carry):
      loss, metrics, carry = outputs(params, batch, carry)
      return loss, (metrics, carry)
    return stateful_loss_fn

  def loss_fn(params, batch):
    loss, metrics, _ = outputs(params, batch, None)
    return loss, metrics
  return loss_fn


def make_free_running_loss(model, start_id: int, feedback: str = "softmax"
                           ) -> LossFn:
  """Loss of a ``Seq2Seq`` whose decoder runs free (no teacher forcing).

  The decoder starts from ``start_id`` and is fed its own previous prediction
  (see ``Seq2Seq.free_running``) for ``target.shape[1]`` steps; the batch's
  ``dec_in`` is never read. The batch holds ``src``, ``target`` and optionally
  ``src_mask`` / ``target_mask``.
  """

  def loss_fn(params, batch):
    mask = batch.get("target_mask")
    logits_BTV = model.apply(params, batch["src"], batch["target"].shape[1],
                             start_id, batch.get("src_mask"), feedback,
                             method="free_running")
    loss = metrics_lib.masked_cross_entropy(logits_BTV, batch["target"], mask)
    pred_BT = jnp.argmax(logits_BTV, axis=-1)
    acc = metrics_lib.masked_token_accuracy(pred_BT, batch["target"], mask)
    return loss, {"token_accuracy": acc}

  return loss_fn


def make_train_step(loss_fn: LossFn, nonfinite: str = "ignore"):
  """-> pure ``train_step(state, batch) -> (state, metrics)``.

  ``nonfinite`` "stop" or "skip": a step whose loss, gradients or updated
  parameters are not all finite is not applied (parameters and optimizer
  state stay; with "skip" the step count still advances, so the data order is
  kept); its metrics have ``nonfinite`` 1.0, and ``grad_norm`` is reported.
  """
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}; got "
                     f"{nonfinite!r}")

  def train_step(state: TrainState, batch: Batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch)
    return state.apply_gradients(grads=grads), {"loss": loss, **aux}

  if nonfinite == "ignore":
    return train_step

  def guarded_step(state: TrainState, batch: Batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch)
    new = state.apply_gradients(grads=grads)
    # A NaN or inf in any gradient makes their norm non-finite: one pass.
    grad_norm = optax.tree.norm(grads)
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) &
              _all_finite(new.params))
    old = state if nonfinite == "stop" else state.replace(step=new.step)
    # A select, not a cond: a finite step's numbers are the plain step's.
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    return new, {"loss": loss, **aux, "grad_norm": grad_norm,
                 "nonfinite": (~finite).astype(jnp.float32)}

  return guarded_step


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all()
                            for x in jax.tree.leaves(tree)] or [True]))


def jit_train_step(loss_fn: LossFn):
  return jax.jit(make_train_step(loss_fn), donate_argnames="state")


def make_eval_step(loss_fn: LossFn):
  """-> jitted ``eval_step(params, batch) -> metrics`` (no update)."""

  @jax.jit
  def eval_step(params, batch):
    loss, aux = loss_fn(params, batch)
    return {"loss": loss, **aux}

  return eval_step


def make_multi_step(loss_fn: LossFn, nonfinite: str = "ignore", mesh=None):
  """-> jitted ``run(state, data, idx_KB, valid_K) -> (state, metrics_K)``.

  Runs K train steps in one call; step k trains on ``data[idx_KB[k]]`` when
  ``valid_K[k]``, and is skipped otherwise (its metrics are zeros).
  ``nonfinite``: as in ``make_train_step``; with "stop", the steps after a
  non-finite one are skipped too, so the state is the last good one. A
  guarded ``run`` takes an optional fifth argument ``halted`` (a device
  bool: skip every step, the previous call having stopped) and reports
  ``metrics_K["halted"]``: passing the last call's ``metrics_K["halted"][-1]``
  on lets ``fit`` check each call's flags one call late, without waiting for
  the device after every call.

  With a ``mesh`` (``seqjax.sharding``), state, data and metrics are
  replicated and the indices' batch axis is split over ``data``: each device
  gathers its own rows and the partitioner all-reduces the gradients.
  """
  train_step = make_train_step(loss_fn, nonfinite)

  def gather(data, idx_B):
    batch = jax.tree.map(lambda a: a[idx_B], data)
    if mesh is not None:
      batch = jax.lax.with_sharding_constraint(
          batch, sharding_lib.batch_sharding(mesh))
    return batch

  def step_or_skip(state, batch, run_step):
    _, metric_shapes = jax.eval_shape(train_step, state, batch)

    def skip(state):
      return state, jax.tree.map(
          lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
    return jax.lax.cond(run_step, lambda s: train_step(s, batch), skip, state)

  if nonfinite == "ignore":
    def run(state, data, idx_KB, valid_K):
      def body(state, inputs):
        idx_B, valid = inputs
        return step_or_skip(state, gather(data, idx_B), valid)
      return jax.lax.scan(body, state, (idx_KB, valid_K))
  else:
    def run(state, data, idx_KB, valid_K, halted=None):
      def body(carry, inputs):
        state, halted = carry
        idx_B, valid = inputs
        state, metrics = step_or_skip(state, gather(data, idx_B),
                                      valid & ~halted)
        if nonfinite == "stop":
          halted = halted | (metrics["nonfinite"] > 0)
        return (state, halted), {**metrics, "halted": halted}
      halted = jnp.zeros((), bool) if halted is None else halted
      (state, _), metrics_K = jax.lax.scan(body, (state, halted),
                                           (idx_KB, valid_K))
      return state, metrics_K

  if mesh is None:
    return jax.jit(run, donate_argnames="state")
  repl = sharding_lib.replicated(mesh)
  in_shardings = (repl, repl, sharding_lib.indices_sharding(mesh), repl)
  if nonfinite != "ignore":
    in_shardings += (repl,)
  return jax.jit(run, donate_argnames="state", in_shardings=in_shardings,
                 out_shardings=(repl, repl))


def make_stateful_train_step(loss_fn: StatefulLossFn):
  """-> pure ``train_step(state, batch, carry) -> (state, carry, metrics)``.

  The incoming carry is a constant of the step (as in Keras' stateful RNNs,
  gradients stop at the batch boundary); the returned carry is the batch's
  final carry, for the next batch.
  """

  def train_step(state: TrainState, batch: Batch, carry):
    (loss, (aux, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, carry)
    return state.apply_gradients(grads=grads), carry, {"loss": loss, **aux}

  return train_step


def make_stateful_eval_step(loss_fn: StatefulLossFn):
  """-> jitted ``eval_step(params, batch, carry) -> (metrics, carry)``."""

  @jax.jit
  def eval_step(params, batch, carry):
    loss, (aux, carry) = loss_fn(params, batch, carry)
    return {"loss": loss, **aux}, carry

  return eval_step


def make_stateful_multi_step(loss_fn: StatefulLossFn):
  """-> jitted ``run(state, carry, initial_carry, data, idx_KB, valid_K,
  reset_K) -> (state, carry, metrics_K)``.

  As ``make_multi_step``, with a carry threaded from step to step: a valid
  step k first resets the carry to ``initial_carry`` if ``reset_K[k]``, trains
  on ``data[idx_KB[k]]`` from it and hands its final carry to step k + 1.
  """
  train_step = make_stateful_train_step(loss_fn)

  def run(state, carry, initial_carry, data, idx_KB, valid_K, reset_K):
    def body(state_carry, inputs):
      idx_B, valid, reset = inputs
      batch = jax.tree.map(lambda a: a[idx_B], data)

      def step(state_carry):
        state, carry = state_carry
        carry = stateful_lib.reset_carry(reset, initial_carry, carry)
        state, carry, metrics = train_step(state, batch, carry)
        return (state, carry), metrics
      _, metric_shapes = jax.eval_shape(step, state_carry)

      def skip(state_carry):
        return state_carry, jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
      return jax.lax.cond(valid, step, skip, state_carry)
    (state, carry), metrics = jax.lax.scan(body, (state, carry),
                                           (idx_KB, valid_K, reset_K))
    return state, carry, metrics

  return jax.jit(run, donate_argnames="state")


def stateful_permutation(seed: int, epoch: int, n: int, block_rows: int,
                         shuffle: bool = True) -> np.ndarray:
  """Row order of a stateful epoch: whole blocks of ``block_rows`` rows
  (the batches between two resets) in a (seed, epoch) order, rows within a
  block kept in order."""
  blocks = epoch_permutation(seed, epoch, n // block_rows, shuffle)
  return (blocks[:, None] * block_rows + np.arange(block_rows)).ravel()


def epoch_permutation(seed: int, epoch: int, n: int, shuffle: bool = True
                      ) -> np.ndarray:
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)


@dataclasses.dataclass(frozen=True)
class BucketPlan:
  """Batches drawn from several datasets, e.g. length buckets each padded to
  its own width, for ``fit(..., batch_plan=)``.

  Every batch comes from one dataset; each epoch, each dataset's rows are
  permuted and cut into full batches (the remainder, different each epoch, is
  dropped), and runs of up to ``group`` batches of one dataset are shuffled.
  A run lets one jitted call scan several steps over one dataset's shapes, so
  the step compiles once per dataset. The order is a function of (seed, epoch).
  """

  sizes: tuple[int, ...]      # rows of each dataset
  batch_size: int
  group: int = 1              # batches of one dataset kept consecutive
  shuffle: bool = True

  @property
  def num_examples(self) -> int:
    return sum(self.sizes)

  @property
  def steps_per_epoch(self) -> int:
    return sum(n // self.batch_size for n in self.sizes)

  def epoch(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (dataset of each step (S,), rows of each step flattened (S * B,))."""
    bsz, runs = self.batch_size, []
    for d, n in enumerate(self.sizes):
      rows = (np.random.default_rng([seed, 1_000_003, epoch, d]).permutation(n)
              if self.shuffle else np.arange(n))
      batches = rows[:n // bsz * bsz].reshape(-1, bsz)
      runs += [(d, batches[i:i + self.group])
               for i in range(0, len(batches), self.group)]
    if self.shuffle:
      order = np.random.default_rng([seed, 1_000_004, epoch]).permutation(
          len(runs))
      runs = [runs[i] for i in order]
    dataset_S = np.concatenate(
        [np.full(len(b), d, np.int32) for d, b in runs]).astype(np.int32)
    rows_SB = np.concatenate([b for _, b in runs]).astype(np.int32)
    return dataset_S, rows_SB.reshape(-1)

  def run_length(self, dataset_S: np.ndarray, start: int) -> int:
    """Consecutive steps from ``start`` that use the same dataset."""
    same = dataset_S[start:] == dataset_S[start]
    return int(same.argmin()) if not same.all() else len(same)


@dataclasses.dataclass
class FitConfig:
  batch_size: int
  epochs: int = 1
  seed: int = 0
  shuffle: bool = True
  steps_per_call: int = 25
  log_every_steps: int = 500
  checkpoint_every_steps: int = 0   # 0: at each epoch end only
  # Logged in metrics rows: a number, or a function of the step (a schedule).
  learning_rate: Optional[Any] = None
  checkpoint_every_secs: float = 0.0  # also save when this long since the last
  nonfinite: str = "ignore"         # see NONFINITE_MODES


@dataclasses.dataclass
class FitStats:
  steps_run: int = 0
  train_seconds: float = 0.0        # all training calls, compile included
  first_call_seconds: float = 0.0   # the first call (compile + K steps)
  steady_seconds: float = 0.0       # the calls after the first
  steady_steps: int = 0
  compiles: int = 0
  last_metrics: dict = dataclasses.field(default_factory=dict)
  final_carry: Any = None          # stateful fit: the carry after the last step
  nonfinite_skipped: int = 0        # steps skipped (FitConfig.nonfinite="skip")
  interrupted: bool = False         # should_stop() ended the run early

  def samples_per_second(self, batch_size: int) -> float:
    if self.steady_steps and self.steady_seconds > 0:
      return self.steady_steps * batch_size / self.steady_seconds
    if self.train_seconds > 0:
      return self.steps_run * batch_size / self.train_seconds
    return 0.0


class MetricsLog:
  """Appends rows to ``<workdir>/metrics.jsonl`` (one JSON object a line)."""

  def __init__(self, path: Optional[str]):
    self.path = path

  def write(self, row: dict):
    if self.path is None:
      return
    # One whole line per write(2), fsynced: a crash never leaves half a row.
    reliability.append_line(self.path, json.dumps(row))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the partial last batch is dropped: a new
  permutation each epoch means every example is still seen)."""
  return num_examples // batch_size


def fit(state: TrainState, data: dict[str, np.ndarray], loss_fn: LossFn,
        config: FitConfig, *, checkpointer=None,
        metrics_log: Optional[MetricsLog] = None,
        epoch_end_fn: Optional[Callable[[TrainState, int], dict]] = None,
        multi_step=None, initial_carry=None, reset_every: int = 0,
        mesh=None, should_stop: Optional[Callable[[], bool]] = None,
        batch_plan: Optional[BucketPlan] = None,
        ) -> tuple[TrainState, FitStats]:
  """Trains ``state`` from its current step to ``epochs`` full epochs.

  ``data`` is a dict of equally long arrays; batches are rows of it. Resumes
  from ``state.step``. ``checkpointer.save(state)`` is called at checkpoint
  boundaries and at the end; ``epoch_end_fn(state, epoch)`` after each epoch
  (its dict is logged). ``should_stop()`` is polled after each jitted call:
  when true, a checkpoint is saved at that step and fit returns with
  ``stats.interrupted``. With ``config.nonfinite="stop"`` a non-finite step
  raises ``reliability.NonFiniteError`` after saving the last good state.

  Stateful training: with ``initial_carry`` (a carry pytree of batch size
  ``batch_size``), ``loss_fn`` has the signature ``loss_fn(params, batch,
  carry) -> (loss, (metrics, carry))``; each step starts from the previous
  step's final carry, which is reset to ``initial_carry`` every
  ``reset_every`` steps (0: never). Batches are consecutive rows; shuffling
  permutes whole blocks of ``reset_every`` batches, never rows inside one.
  The last carry is ``stats.final_carry``. The carry is not checkpointed: a
  run resumed between two resets restarts from ``initial_carry``.

  With a ``mesh`` (``seqjax.sharding.make_mesh``) each
  batch is split over its devices (data parallel); the returned state is
  replicated on them.

  With ``batch_plan`` (a ``BucketPlan``), ``data`` is a list of such dicts
  (e.g. length buckets, each with its own shapes) and the plan orders the
  batches; the step compiles once per dataset, for all of them before the
  first step (``stats.first_call_seconds`` includes those compiles).
  """
  if batch_plan is not None and batch_plan.batch_size != config.batch_size:
    raise ValueError(f"batch_plan.batch_size {batch_plan.batch_size} != "
                     f"batch_size {config.batch_size}")
  n = (len(next(iter(data.values()))) if batch_plan is None
       else batch_plan.num_examples)
  bsz = config.batch_size
  spe = (steps_per_epoch(n, bsz) if batch_plan is None
         else batch_plan.steps_per_epoch)
  if spe == 0:
    raise ValueError(f"batch_size {bsz} is larger than the {n} training "
                     "examples")
  stateful = initial_carry is not None
  if stateful and reset_every and n % (bsz * reset_every):
    raise ValueError(f"stateful fit: the {n} examples must be whole blocks of "
                     f"reset_every * batch_size = {reset_every * bsz} rows")
  total = spe * config.epochs
  step = int(state.step)
  stats = FitStats()
  if step >= total:
    logging.info("Checkpoint at step %d already covers %d epoch(s); nothing "
                 "to train.", step, config.epochs)
    return state, stats
  if stateful and mesh is not None:
    raise SeqjaxError("stateful training runs on one device: set "
                      "--num_devices=1")
  if stateful and batch_plan is not None:
    raise ValueError("stateful fit takes consecutive rows of one dataset, not "
                     "a batch_plan")
  # The non-finite guard covers the stateless paths; a stateful run is not
  # guarded (its carry would need the same treatment).
  guarded = config.nonfinite != "ignore" and not stateful
  if stateful:
    multi_step = multi_step or make_stateful_multi_step(loss_fn)
    carry = initial_carry
    if reset_every and step % reset_every:
      logging.warning("Resuming at step %d, between two carry resets: the "
                      "carry restarts from initial_carry.", step)
    device_data = jax.device_put(data)
  elif mesh is None:
    multi_step = multi_step or make_multi_step(loss_fn, config.nonfinite)
    device_data = jax.device_put(data)
  else:
    sharding_lib.check_batch_size(bsz, mesh)
    multi_step = multi_step or make_multi_step(loss_fn, config.nonfinite, mesh)
    device_data = sharding_lib.replicate(data, mesh)
    state = sharding_lib.replicate(state, mesh)
  step_start = step
  # The guard checks a call's flags one call late (after the next call is
  # dispatched) or at the next log / checkpoint / epoch end, whichever is
  # first, so the host never waits on the device after every call. With
  # "stop", a call after a non-finite step is passed the halted flag and
  # skips all its steps: the state is still the last good one when seen.
  unchecked = None   # (metrics_K, valid steps, step before the call)
  no_halt = jnp.zeros((), bool)
  if mesh is not None:
    no_halt = sharding_lib.replicate(np.zeros((), bool), mesh)

  def check_unchecked():
    nonlocal unchecked
    if unchecked is None:
      return
    metrics_K, kk, step_before = unchecked
    unchecked = None
    bad_K = np.asarray(metrics_K["nonfinite"])[:kk] > 0
    if config.nonfinite == "stop" and bad_K.any():
      # pending's last entry is this call (its steps up to the bad one are
      # logged by _stop_nonfinite itself).
      _stop_nonfinite(state, metrics_K, int(np.argmax(bad_K)), step_before,
                      step_start, spe, pending[:-1], checkpointer,
                      metrics_log)
    stats.nonfinite_skipped += int(bad_K.sum())

  t_saved = time.perf_counter()
  k_max = max(1, config.steps_per_call)
  pending = []       # (metrics_K on device, number of valid steps)
  perm_epoch, perm = -1, None
  t_start = time.perf_counter()
  t_log, step_log = t_start, step
  logging.info("Training %d steps (%d per epoch, batch %d) from step %d.",
               total, spe, bsz, step)

  def boundaries(step):
    epoch_end = (step // spe + 1) * spe
    ends = [epoch_end, total]
    if config.log_every_steps:
      ends.append((step // config.log_every_steps + 1) * config.log_every_steps)
    if config.checkpoint_every_steps and checkpointer is not None:
      every = config.checkpoint_every_steps
      ends.append((step // every + 1) * every)
    return min(ends)

  while step < total:
    epoch = step // spe
    if epoch != perm_epoch:
      if batch_plan is not None:  # perm: rows within each step's dataset
        dataset_S, perm = batch_plan.epoch(config.seed, epoch)
      elif stateful:
        perm = stateful_permutation(config.seed, epoch, n,
                                    bsz * (reset_every or spe), config.shuffle)
      else:
        perm = epoch_permutation(config.seed, epoch, n, config.shuffle)
      perm_epoch = epoch
    k = min(k_max, boundaries(step) - step)
    if batch_plan is not None:
      k = min(k, batch_plan.run_length(dataset_S, step % spe))
    offset = (step % spe) * bsz
    idx = np.zeros((k_max, bsz), np.int32)
    idx[:k] = perm[offset:offset + k * bsz].reshape(k, bsz)
    valid = np.arange(k_max) < k
    if mesh is not None:
      idx, valid = (sharding_lib.shard_indices(idx, mesh),
                    sharding_lib.replicate(valid, mesh))
    t_call = time.perf_counter()
    if batch_plan is not None and stats.steps_run == 0:
      # Compile the step for every dataset's shapes now, with all K steps
      # skipped (the state comes back unchanged): no compile falls inside the
      # epoch, and first_call_seconds counts them all.
      t_first = t_call
      none_valid = np.zeros(k_max, bool)
      if mesh is not None:
        none_valid = sharding_lib.replicate(none_valid, mesh)
      for d in range(len(device_data)):
        state, _ = multi_step(state, device_data[d], idx, none_valid,
                              *((no_halt,) if guarded else ()))
    if stateful:
      reset = (np.arange(step, step + k_max) % reset_every == 0
               if reset_every else np.zeros(k_max, bool))
      state, carry, metrics_K = multi_step(state, carry, initial_carry,
                                           device_data, idx, valid, reset)
    else:
      halted = ()
      if guarded:  # the last call's final flag (a device value: no wait)
        halted = (no_halt if unchecked is None
                  else unchecked[0]["halted"][-1],)
      state, metrics_K = multi_step(
          state, device_data if batch_plan is None
          else device_data[dataset_S[step % spe]], idx, valid, *halted)
    if guarded:
      check_unchecked()  # the previous call's, while this one runs
      unchecked = (metrics_K, k, step)
    pending.append((metrics_K, k))
    if stats.steps_run == 0:
      jax.block_until_ready(state.step)
      stats.first_call_seconds = time.perf_counter() - (
          t_first if batch_plan is not None else t_call)
      t_steady = time.perf_counter()
    else:
      stats.steady_steps += k
    stats.steps_run += k
    step += k

    at_log = config.log_every_steps and step % config.log_every_steps == 0
    at_epoch_end = step % spe == 0
    at_ckpt = (config.checkpoint_every_steps and
               step % config.checkpoint_every_steps == 0)
    at_ckpt = at_ckpt or (config.checkpoint_every_secs and
                          time.perf_counter() - t_saved >=
                          config.checkpoint_every_secs)
    if at_log or at_epoch_end or at_ckpt or step == total:
      check_unchecked()  # before anything is logged, saved or evaluated
    if at_log or at_epoch_end or step == total:
      row = (_reduce_guarded if guarded else _reduce_metrics)(pending)
      pending = []
      now = time.perf_counter()
      rate = (step - step_log) / max(now - t_log, 1e-9)
      eta = (total - step) / max(rate, 1e-9)
      row.update(step=step, epoch=step / spe, steps_per_s=rate,
                 samples_per_s=rate * bsz, wall_s=now - t_start)
      if config.learning_rate is not None:
        lr = config.learning_rate
        row["learning_rate"] = float(lr(step) if callable(lr) else lr)
      row["time"] = time.time()
      logging.info("step %d/%d epoch %.2f loss %.4f token_acc %.4f "
                   "%.1f steps/s ETA %.0fs", step, total, step / spe,
                   row.get("loss", float("nan")),
                   row.get("token_accuracy", float("nan")), rate, eta)
      stats.last_metrics = row
      if metrics_log:
        metrics_log.write(row)
      t_log, step_log = now, step
    if checkpointer is not None and (at_ckpt or at_epoch_end or step == total):
      checkpointer.save(state)
      t_saved = time.perf_counter()
    if at_epoch_end and epoch_end_fn is not None:
      extra = epoch_end_fn(state, step // spe)
      if extra:
        if metrics_log:
          metrics_log.write({"step": step, "epoch": step // spe, "eval": True,
                             "wall_s": time.perf_counter() - t_start,
                             "time": time.time(), **extra})
    if should_stop is not None and step < total and should_stop():
      check_unchecked()
      if pending:  # log the steps since the last row, then save this step
        row = (_reduce_guarded if guarded else _reduce_metrics)(pending)
        pending = []
        row.update(step=step, epoch=step / spe, interrupted=True)
        stats.last_metrics = row
        if metrics_log:
          metrics_log.write(row)
      if checkpointer is not None:
        checkpointer.save(state)
      stats.interrupted = True
      logging.warning("Stopped at step %d on request.", step)
      break

  jax.block_until_ready(state.params)
  end = time.perf_counter()
  stats.train_seconds = end - t_start
  if stats.steps_run > 0 and stats.steady_steps:
    stats.steady_seconds = end - t_steady
  stats.compiles = multi_step._cache_size()
  if stateful:
    stats.final_carry = carry
  return state, stats


def _reduce_guarded(pending) -> dict:
  """Like _reduce_metrics, over the finite steps only; counts the others."""
  sums, count, skipped = {}, 0, 0
  for metrics_K, k in pending:
    host = jax.device_get(metrics_K)
    host.pop("halted", None)
    good_K = ~(np.asarray(host.pop("nonfinite"))[:k] > 0)
    for name, values in host.items():
      sums[name] = sums.get(name, 0.0) + float(
          np.asarray(values)[:k][good_K].sum())
    count += int(good_K.sum())
    skipped += k - int(good_K.sum())
  # No finite step in the window: NaN, not a misleading 0.
  row = {name: total / count if count else float("nan")
         for name, total in sums.items()}
  row["nonfinite_skipped"] = skipped
  return row


def _stop_nonfinite(state, metrics_K, j, step, step_start, spe, pending,
                    checkpointer, metrics_log):
  """Step ``step + j + 1`` was not finite: ``state`` is the last good one
  (step + j). Logs and saves it (it is finite), then raises."""
  host = jax.device_get(metrics_K)
  bad_step = step + j + 1
  loss, grad_norm = float(host["loss"][j]), float(host["grad_norm"][j])
  row = _reduce_guarded(pending + [(metrics_K, j)]) if pending or j else {}
  row.update(step=step + j, epoch=(step + j) / spe, nonfinite_step=bad_step,
             nonfinite_loss=str(loss), nonfinite_grad_norm=str(grad_norm))
  if metrics_log:
    metrics_log.write(row)
  saved = ""
  if checkpointer is not None:
    if step + j > step_start:
      checkpointer.save(state)
    last = checkpointer.latest_step()
    saved = (f" The last good checkpoint (step {last}) in "
             f"{checkpointer.directory} is kept; nothing non-finite was "
             "saved." if last is not None else " Nothing was saved.")
  what = (f"loss {loss}" if not np.isfinite(loss) else
          f"gradient norm {grad_norm} (loss {loss})" if not np.isfinite(
              grad_norm) else f"parameters after the update (loss {loss})")
  raise reliability.NonFiniteError(
      f"Non-finite {what} at step {bad_step} (epoch {bad_step / spe:.2f}): "
      f"the update was not applied and training stopped.{saved} Lower "
      "--learning_rate, or pass --skip_nonfinite_updates to skip such steps.")


def _reduce_metrics(pending) -> dict:
  """Mean of each metric over the valid steps of the pending calls."""
  sums, count = {}, 0
  for metrics_K, k in pending:
    host = jax.device_get(metrics_K)
    for name, values in host.items():
      sums[name] = sums.get(name, 0.0) + float(np.asarray(values)[:k].sum())
    count += k
  return {name: total / max(count, 1) for name, total in sums.items()}
