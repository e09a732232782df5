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

TrainState = train_state.TrainState
Batch = dict[str, Any]
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
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
  optionally ``src_mask`` / ``target_mask`` (padding False).
  """

  def loss_fn(params, batch):
    mask = batch.get("target_mask")
    logits_BTV = model.apply(params, batch["src"], batch["dec_in"],
                             batch.get("src_mask"), mask)
    loss = metrics_lib.masked_cross_entropy(logits_BTV, batch["target"], mask)
    pred_BT = jnp.argmax(logits_BTV, axis=-1)
    acc = metrics_lib.masked_token_accuracy(pred_BT, batch["target"], mask)
    return loss, {"token_accuracy": acc}

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


def make_train_step(loss_fn: LossFn):
  """-> pure ``train_step(state, batch) -> (state, metrics)``."""

  def train_step(state: TrainState, batch: Batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch)
    return state.apply_gradients(grads=grads), {"loss": loss, **aux}

  return train_step


def jit_train_step(loss_fn: LossFn):
  return jax.jit(make_train_step(loss_fn), donate_argnames="state")


def make_eval_step(loss_fn: LossFn):
  """-> jitted ``eval_step(params, batch) -> metrics`` (no update)."""

  @jax.jit
  def eval_step(params, batch):
    loss, aux = loss_fn(params, batch)
    return {"loss": loss, **aux}

  return eval_step


def make_multi_step(loss_fn: LossFn):
  """-> jitted ``run(state, data, idx_KB, valid_K) -> (state, metrics_K)``.

  Runs K train steps in one call; step k trains on ``data[idx_KB[k]]`` when
  ``valid_K[k]``, and is skipped otherwise (its metrics are zeros).
  """
  train_step = make_train_step(loss_fn)

  def run(state, data, idx_KB, valid_K):
    def body(state, inputs):
      idx_B, valid = inputs
      batch = jax.tree.map(lambda a: a[idx_B], data)
      _, metric_shapes = jax.eval_shape(train_step, state, batch)

      def skip(state):
        return state, jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
      return jax.lax.cond(valid, lambda s: train_step(s, batch), skip, state)
    return jax.lax.scan(body, state, (idx_KB, valid_K))

  return jax.jit(run, donate_argnames="state")


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


@dataclasses.dataclass
class FitStats:
  steps_run: int = 0
  train_seconds: float = 0.0        # all training calls, compile included
  first_call_seconds: float = 0.0   # the first call (compile + K steps)
  steady_seconds: float = 0.0       # the calls after the first
  steady_steps: int = 0
  compiles: int = 0
  last_metrics: dict = dataclasses.field(default_factory=dict)

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
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the partial last batch is dropped: a new
  permutation each epoch means every example is still seen)."""
  return num_examples // batch_size


def fit(state: TrainState, data: dict[str, np.ndarray], loss_fn: LossFn,
        config: FitConfig, *, checkpointer=None,
        metrics_log: Optional[MetricsLog] = None,
        epoch_end_fn: Optional[Callable[[TrainState, int], dict]] = None,
        multi_step=None, batch_plan: Optional[BucketPlan] = None
        ) -> tuple[TrainState, FitStats]:
  """Trains ``state`` from its current step to ``epochs`` full epochs.

  ``data`` is a dict of equally long arrays; batches are rows of it. Resumes
  from ``state.step``. ``checkpointer.save(state)`` is called at checkpoint
  boundaries and at the end; ``epoch_end_fn(state, epoch)`` after each epoch
  (its dict is logged).

  With ``batch_plan`` (a ``BucketPlan``), ``data`` is a list of such dicts
  (e.g. length buckets, each with its own shapes) and the plan orders the
  batches; the step compiles once per dataset.
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
  total = spe * config.epochs
  step = int(state.step)
  stats = FitStats()
  if step >= total:
    logging.info("Checkpoint at step %d already covers %d epoch(s); nothing "
                 "to train.", step, config.epochs)
    return state, stats
  multi_step = multi_step or make_multi_step(loss_fn)
  device_data = jax.device_put(data)
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
      if batch_plan is None:
        perm = epoch_permutation(config.seed, epoch, n, config.shuffle)
      else:  # perm: rows within each step's dataset
        dataset_S, perm = batch_plan.epoch(config.seed, epoch)
      perm_epoch = epoch
    k = min(k_max, boundaries(step) - step)
    if batch_plan is not None:
      k = min(k, batch_plan.run_length(dataset_S, step % spe))
    offset = (step % spe) * bsz
    idx = np.zeros((k_max, bsz), np.int32)
    idx[:k] = perm[offset:offset + k * bsz].reshape(k, bsz)
    valid = np.arange(k_max) < k
    t_call = time.perf_counter()
    state, metrics_K = multi_step(
        state, device_data if batch_plan is None
        else device_data[dataset_S[step % spe]], idx, valid)
    pending.append((metrics_K, k))
    if stats.steps_run == 0:
      jax.block_until_ready(state.step)
      stats.first_call_seconds = time.perf_counter() - t_call
      t_steady = time.perf_counter()
    else:
      stats.steady_steps += k
    stats.steps_run += k
    step += k

    at_log = config.log_every_steps and step % config.log_every_steps == 0
    at_epoch_end = step % spe == 0
    if at_log or at_epoch_end or step == total:
      row = _reduce_metrics(pending)
      pending = []
      now = time.perf_counter()
      rate = (step - step_log) / max(now - t_log, 1e-9)
      eta = (total - step) / max(rate, 1e-9)
      row.update(step=step, epoch=step / spe, steps_per_s=rate,
                 samples_per_s=rate * bsz, wall_s=now - t_start)
      logging.info("step %d/%d epoch %.2f loss %.4f token_acc %.4f "
                   "%.1f steps/s ETA %.0fs", step, total, step / spe,
                   row.get("loss", float("nan")),
                   row.get("token_accuracy", float("nan")), rate, eta)
      stats.last_metrics = row
      if metrics_log:
        metrics_log.write(row)
      t_log, step_log = now, step
    at_ckpt = (config.checkpoint_every_steps and
               step % config.checkpoint_every_steps == 0)
    if checkpointer is not None and (at_ckpt or at_epoch_end or step == total):
      checkpointer.save(state)
    if at_epoch_end and epoch_end_fn is not None:
      extra = epoch_end_fn(state, step // spe)
      if extra:
        if metrics_log:
          metrics_log.write({"step": step, "epoch": step // spe, "eval": True,
                             **extra})

  jax.block_until_ready(state.params)
  end = time.perf_counter()
  stats.train_seconds = end - t_start
  if stats.steps_run > 0 and stats.steady_steps:
    stats.steady_seconds = end - t_steady
  stats.compiles = multi_step._cache_size()
  return state, stats


def _reduce_metrics(pending) -> dict:
  """Mean of each metric over the valid steps of the pending calls."""
  sums, count = {}, 0
  for metrics_K, k in pending:
    host = jax.device_get(metrics_K)
    for name, values in host.items():
      sums[name] = sums.get(name, 0.0) + float(np.asarray(values)[:k].sum())
    count += k
  return {name: total / max(count, 1) for name, total in sums.items()}
