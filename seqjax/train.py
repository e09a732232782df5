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

``fit`` is a short loop over three parts: the train call (``make_multi_step``:
one signature whether guarded, stateful or sharded), a schedule
(``ShuffledRows``, ``StatefulBlocks``, ``BucketPlan``: the rows of each step)
fed by ``_Feed``, and the periodic actions of ``_Loop`` (log, checkpoint by
steps or seconds, epoch-end evaluation, the non-finite monitor, stop).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seqjax import metrics as metrics_lib
from seqjax import progress as progress_lib
from seqjax import stateful as stateful_lib
from seqjax import sharding as sharding_lib
from seqjax.errors import ParameterError, SeqjaxError
from seqjax import selection as selection_lib
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


# constant: the optimizer's own fixed rate (the plain optax transformation);
# plateau: cut by a factor when the select metric stalls (set from the host
# at epoch ends); warmup_decay: linear warmup, then cosine decay to 0 at the
# end of training (``warmup_cosine``).
LR_SCHEDULES = ("constant", "plateau", "warmup_decay")


def make_optimizer(name: str, learning_rate: Optional[float] = None, *,
                   schedule: str = "constant", clip_norm: float = 0.0,
                   warmup_steps: int = 0, total_steps: int = 0
                   ) -> optax.GradientTransformation:
  """adam / rmsprop / sgd with Keras' defaults (epsilon 1e-7, rho 0.9).

  ``clip_norm`` > 0: gradients are clipped to that global norm first
  (``optax.clip_by_global_norm``). A ``schedule`` other than "constant"
  (``LR_SCHEDULES``) wraps the optimizer in ``optax.inject_hyperparams``, so
  the learning rate is part of the optimizer state: checkpointed, read by
  ``learning_rate_of`` and set by ``with_learning_rate`` without a compile.
  "warmup_decay" needs ``total_steps`` (the steps of the whole run). The
  defaults give the plain optax optimizer, state and numbers unchanged.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
  if schedule not in LR_SCHEDULES:
    raise ParameterError("schedule", schedule,
                         f"expected one of {', '.join(LR_SCHEDULES)}")
  if not clip_norm >= 0:
    raise ParameterError("clip_norm", clip_norm, "must be >= 0")
  lr = DEFAULT_LEARNING_RATES[name] if learning_rate is None else learning_rate

  def build(learning_rate):
    tx = _base_optimizer(name, learning_rate)
    if clip_norm > 0:
      return optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx

  if schedule == "constant":
    return build(lr)
  if schedule == "warmup_decay":
    if total_steps < 1:
      raise ParameterError("total_steps", total_steps,
                           "warmup_decay needs the run's steps (>= 1)")
    lr = warmup_cosine(lr, warmup_steps, total_steps)
  return optax.inject_hyperparams(build)(learning_rate=lr)


def _base_optimizer(name: str, lr) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(lr, eps=1e-7)
  if name == "rmsprop":
    return optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False)
  return optax.sgd(lr)


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int):
  """-> ``lr(count)``: ``peak * (count + 1) / warmup_steps`` for the first
  ``warmup_steps`` updates (the first update already learns), then a cosine
  from ``peak`` down to 0 at ``total_steps`` (the last update's rate is just
  above 0)."""
  decay_steps = max(1, total_steps - warmup_steps)

  def lr(count):
    count = jnp.asarray(count, jnp.float32)
    warm = peak * (count + 1) / max(1, warmup_steps)
    progress = jnp.clip((count - warmup_steps) / decay_steps, 0.0, 1.0)
    decay = 0.5 * peak * (1 + jnp.cos(jnp.pi * progress))
    return jnp.where(count < warmup_steps, warm, decay)

  return lr


def learning_rate_of(opt_state) -> Optional[jax.Array]:
  """The learning rate an ``inject_hyperparams`` optimizer state holds (the
  rate of its last update; a schedule's next value is computed at the next
  update), or None for a plain optimizer."""
  hyperparams = getattr(opt_state, "hyperparams", None)
  if isinstance(hyperparams, dict):
    return hyperparams.get("learning_rate")
  return None


def with_learning_rate(state: TrainState, value: float) -> TrainState:
  """``state`` with the learning rate of its optimizer set to ``value``: a
  new leaf of the same dtype and placement, so the train step does not
  compile again. The optimizer must come from ``make_optimizer(schedule=
  "plateau")``."""
  old = learning_rate_of(state.opt_state)
  if old is None:
    raise ValueError("the optimizer state holds no learning rate; use "
                     "make_optimizer(schedule='plateau')")
  # Same dtype (not weakly typed) and same commitment: jit would compile
  # again for either difference.
  new = jnp.asarray(value, old.dtype)
  if old.committed:
    new = jax.device_put(new, old.sharding)
  hyperparams = {**state.opt_state.hyperparams, "learning_rate": new}
  return state.replace(opt_state=state.opt_state._replace(
      hyperparams=hyperparams))


def create_train_state(model, params, tx) -> TrainState:
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  # A Python-int step is weakly typed; the step after one update is not, which
  # would compile the train step twice.
  return state.replace(step=jnp.zeros((), jnp.int32))


def _dropout_rngs(dropout_seed: Optional[int], step) -> Optional[dict]:
  """The "dropout" rng of a train step: the run's seed folded with the step,
  so a resumed run draws the same masks. None (evaluation): no dropout."""
  if dropout_seed is None or step is None:
    return None
  return {"dropout": jax.random.fold_in(jax.random.key(dropout_seed), step)}


def _sequence_loss(logits_BTV, batch, mask, label_smoothing: float):
  loss = metrics_lib.masked_cross_entropy(logits_BTV, batch["target"], mask,
                                          label_smoothing)
  pred_BT = jnp.argmax(logits_BTV, axis=-1)
  acc = metrics_lib.masked_token_accuracy(pred_BT, batch["target"], mask)
  return loss, {"token_accuracy": acc}


def make_seq2seq_loss(model, label_smoothing: float = 0.0,
                      dropout_seed: Optional[int] = None) -> LossFn:
  """Teacher-forced loss of a ``Seq2Seq``-like model.

  The batch holds ``src`` (B, S), ``dec_in`` (B, T), ``target`` (B, T) and
  optionally ``src_mask`` / ``target_mask`` (padding False). A model with
  ``takes_decoder_input = False`` (``RepeatVectorSeq2Seq``) is called on the
  source alone and needs no ``dec_in``.

  ``label_smoothing`` spreads that much of each target's probability evenly
  over the vocabulary. With a ``dropout_seed`` the train step passes its
  ``step`` and the model gets a "dropout" rng (``_dropout_rngs``); the
  evaluation step passes none, so dropout is off there.
  """
  takes_decoder_input = getattr(model, "takes_decoder_input", True)

  def loss_fn(params, batch, step=None):
    mask = batch.get("target_mask")
    rngs = _dropout_rngs(dropout_seed, step)
    if takes_decoder_input:
      logits_BTV = model.apply(params, batch["src"], batch["dec_in"],
                               batch.get("src_mask"), mask, rngs=rngs)
    else:
      logits_BTV = model.apply(params, batch["src"], batch.get("src_mask"),
                               rngs=rngs)
    return _sequence_loss(logits_BTV, batch, mask, label_smoothing)

  loss_fn.takes_step = dropout_seed is not None
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


def make_free_running_loss(model, start_id: int, feedback: str = "softmax",
                           label_smoothing: float = 0.0,
                           dropout_seed: Optional[int] = None) -> LossFn:
  """Loss of a ``Seq2Seq`` whose decoder runs free (no teacher forcing).

  The decoder starts from ``start_id`` and is fed its own previous prediction
  (see ``Seq2Seq.free_running``) for ``target.shape[1]`` steps; the batch's
  ``dec_in`` is never read. The batch holds ``src``, ``target`` and optionally
  ``src_mask`` / ``target_mask``. ``label_smoothing``, ``dropout_seed``: as
  in ``make_seq2seq_loss``.
  """

  def loss_fn(params, batch, step=None):
    mask = batch.get("target_mask")
    logits_BTV = model.apply(params, batch["src"], batch["target"].shape[1],
                             start_id, batch.get("src_mask"), feedback,
                             method="free_running",
                             rngs=_dropout_rngs(dropout_seed, step))
    return _sequence_loss(logits_BTV, batch, mask, label_smoothing)

  loss_fn.takes_step = dropout_seed is not None
  return loss_fn


def _loss_and_grads(loss_fn, params, batch, carry, step=None):
  """-> (loss, aux, new carry, grads); ``carry`` () for a stateless loss
  ``loss_fn(params, batch)``, else ``loss_fn(params, batch, carry)``. A loss
  with ``takes_step`` (dropout) also gets the train step's ``step``."""
  if getattr(loss_fn, "takes_step", False):
    loss_fn = functools.partial(loss_fn, step=step)
  if carry == ():
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch)
    return loss, aux, carry, grads
  (loss, (aux, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch, carry)
  return loss, aux, carry, grads


def _make_step(loss_fn, nonfinite: str = "ignore"):
  """-> pure ``step(state, carry, batch) -> (state, carry, metrics)``; see
  ``make_train_step``. A step not applied also keeps the carry it was given
  (a non-finite forward pass may have spoilt the new one)."""
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}; got "
                     f"{nonfinite!r}")

  def step(state: TrainState, carry, batch: Batch):
    loss, aux, new_carry, grads = _loss_and_grads(loss_fn, state.params,
                                                  batch, carry, state.step)
    new = state.apply_gradients(grads=grads)
    metrics = {"loss": loss, **aux}
    if nonfinite == "ignore":
      return new, new_carry, metrics
    # A NaN or inf in any gradient makes their norm non-finite: one pass.
    grad_norm = optax.tree.norm(grads)
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) &
              _all_finite(new.params))
    old = state if nonfinite == "stop" else state.replace(step=new.step)
    # A select, not a cond: a finite step's numbers are the plain step's.
    new, new_carry = jax.tree.map(lambda a, b: jnp.where(finite, a, b),
                                  (new, new_carry), (old, carry))
    return new, new_carry, {**metrics, "grad_norm": grad_norm,
                            "nonfinite": (~finite).astype(jnp.float32)}

  return step


def make_train_step(loss_fn: LossFn, nonfinite: str = "ignore"):
  """-> pure ``train_step(state, batch) -> (state, metrics)``.

  ``nonfinite`` "stop" or "skip": a step whose loss, gradients or updated
  parameters are not all finite is not applied (parameters and optimizer
  state stay; with "skip" the step count still advances, so the data order is
  kept); its metrics have ``nonfinite`` 1.0, and ``grad_norm`` is reported.
  """
  step = _make_step(loss_fn, nonfinite)

  def train_step(state: TrainState, batch: Batch):
    state, _, metrics = step(state, (), batch)
    return state, metrics

  return train_step


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


class StreamCarry(NamedTuple):
  """The carry of a stateful run as a train call takes it: the carry now and
  the one a reset restores."""
  carry: Any
  initial: Any


# Each train call gets its own name, so its compiles are counted apart.
_CALL_IDS = itertools.count()


def make_multi_step(loss_fn, nonfinite: str = "ignore", mesh=None):
  """-> jitted ``train_call(state, carry, data, idx_KB, valid_K, reset_K,
  halted) -> (state, carry, halted, metrics_K)``, one signature for every mode.

  Runs K train steps in one call; step k trains on ``data[idx_KB[k]]`` when
  ``valid_K[k]`` and not ``halted``, and is skipped otherwise (its metrics are
  zeros). ``carry`` is () for a stateless ``loss_fn(params, batch)``, or a
  ``StreamCarry`` for a stateful ``loss_fn(params, batch, carry)``: a valid
  step first resets the carry to ``initial`` if ``reset_K[k]``, trains from it
  and hands its final carry to step k + 1 (gradients stop at the batch
  boundary, as in Keras' stateful RNNs).

  ``nonfinite``: as in ``make_train_step``; with "stop" the steps after a
  non-finite one are skipped too and ``halted`` comes back true, so passing
  it to the next call lets ``fit`` read each call's flags one call late
  without waiting for the device after every call. ``halted`` is a device
  bool; "ignore" and "skip" return it unchanged.

  With a ``mesh`` (``seqjax.sharding``), state, data and metrics are
  replicated and the indices' batch axis is split over ``data``: each device
  gathers its own rows and the partitioner all-reduces the gradients.
  """
  step = _make_step(loss_fn, nonfinite)

  def gather(data, idx_B):
    batch = jax.tree.map(lambda a: a[idx_B], data)
    if mesh is not None:
      batch = jax.lax.with_sharding_constraint(
          batch, sharding_lib.batch_sharding(mesh))
    return batch

  def train_call(state, carry, data, idx_KB, valid_K, reset_K, halted):
    def one(state_carry, batch, reset):
      state, carry = state_carry
      if isinstance(carry, StreamCarry):
        now = stateful_lib.reset_carry(reset, carry.initial, carry.carry)
        state, now, metrics = step(state, now, batch)
        return (state, carry._replace(carry=now)), metrics
      state, carry, metrics = step(state, carry, batch)
      return (state, carry), metrics

    def body(loop, inputs):
      state, carry, halted = loop
      idx_B, valid, reset = inputs
      batch = gather(data, idx_B)
      run = lambda sc: one(sc, batch, reset)
      _, metric_shapes = jax.eval_shape(run, (state, carry))

      def skip(sc):
        return sc, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                metric_shapes)
      (state, carry), metrics = jax.lax.cond(valid & ~halted, run, skip,
                                             (state, carry))
      if nonfinite == "stop":
        halted = halted | (metrics["nonfinite"] > 0)
      return (state, carry, halted), metrics
    (state, carry, halted), metrics_K = jax.lax.scan(
        body, (state, carry, halted), (idx_KB, valid_K, reset_K))
    return state, carry, halted, metrics_K

  train_call.__name__ = f"train_call_{next(_CALL_IDS)}"
  if mesh is None:
    return jax.jit(train_call, donate_argnames="state")
  repl, idx = sharding_lib.replicated(mesh), sharding_lib.indices_sharding(mesh)
  return jax.jit(train_call, donate_argnames="state",
                 in_shardings=(repl, repl, repl, idx, repl, repl, repl),
                 out_shardings=repl)


def make_stateful_train_step(loss_fn: StatefulLossFn):
  """-> pure ``train_step(state, batch, carry) -> (state, carry, metrics)``.

  The incoming carry is a constant of the step (as in Keras' stateful RNNs,
  gradients stop at the batch boundary); the returned carry is the batch's
  final carry, for the next batch.
  """
  step = _make_step(loss_fn)

  def train_step(state: TrainState, batch: Batch, carry):
    return step(state, carry, batch)

  return train_step


def make_stateful_eval_step(loss_fn: StatefulLossFn):
  """-> jitted ``eval_step(params, batch, carry) -> (metrics, carry)``."""

  @jax.jit
  def eval_step(params, batch, carry):
    loss, (aux, carry) = loss_fn(params, batch, carry)
    return {"loss": loss, **aux}, carry

  return eval_step


# Backend compiles by function name ("jit(name)"), from jax.monitoring's
# compile events, counted from import on.
_COMPILES: collections.Counter = collections.Counter()
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def _on_compile_event(event: str, duration: float, **kwargs):
  del duration
  if event == _BACKEND_COMPILE:
    _COMPILES[kwargs.get("fun_name")] += 1


jax.monitoring.register_event_duration_secs_listener(_on_compile_event)


def compiles_of(fn) -> int:
  """XLA compiles so far of the jitted function ``fn`` (by its name; a
  string names it), the public stand-in for ``fn._cache_size()``."""
  return _COMPILES[f"jit({fn if isinstance(fn, str) else fn.__name__})"]


class CompileCount:
  """Compiles of one function since ``count_compiles`` began (``count``)."""

  def __init__(self, fn):
    self.fn, self.start = fn, (sum(_COMPILES.values()) if fn is None
                               else compiles_of(fn))

  @property
  def count(self) -> int:
    now = sum(_COMPILES.values()) if self.fn is None else compiles_of(self.fn)
    return now - self.start


@contextlib.contextmanager
def count_compiles(fn=None):
  """``with count_compiles(f) as c: ...``: ``c.count`` is the XLA compiles of
  the jitted function ``f`` (by name) in the block, of every function when
  ``f`` is None."""
  yield CompileCount(fn)


# --------------------------------------------------------------------------
# Schedules: the order of the batches, as a function of (seed, epoch).


def epoch_permutation(seed: int, epoch: int, n: int, shuffle: bool = True
                      ) -> np.ndarray:
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)


def stateful_permutation(seed: int, epoch: int, n: int, block_rows: int,
                         shuffle: bool = True) -> np.ndarray:
  """Row order of a stateful epoch: whole blocks of ``block_rows`` rows
  (the batches between two resets) in a (seed, epoch) order, rows within a
  block kept in order."""
  blocks = epoch_permutation(seed, epoch, n // block_rows, shuffle)
  return (blocks[:, None] * block_rows + np.arange(block_rows)).ravel()


@dataclasses.dataclass(frozen=True)
class ShuffledRows:
  """Rows of one dataset in a new (seed, epoch) order each epoch, cut into
  full batches (the partial last batch is dropped)."""

  num_examples: int
  batch_size: int
  shuffle: bool = True
  reset_every: int = 0        # a stateful schedule resets the carry so often

  @property
  def steps_per_epoch(self) -> int:
    return steps_per_epoch(self.num_examples, self.batch_size)

  def epoch(self, seed: int, epoch: int) -> tuple[None, np.ndarray]:
    """-> (None: one dataset, rows of each step flattened (S * B,))."""
    return None, epoch_permutation(seed, epoch, self.num_examples,
                                   self.shuffle)

  def run_length(self, dataset_S, start: int) -> int:
    del dataset_S
    return self.steps_per_epoch - start


@dataclasses.dataclass(frozen=True)
class StatefulBlocks(ShuffledRows):
  """Consecutive rows for a stateful run: shuffling permutes whole blocks of
  ``reset_every`` batches (0: the epoch is one block), never rows in one;
  the carry is reset at the start of each block."""

  def __post_init__(self):
    block = self.batch_size * self.reset_every
    if self.reset_every and self.num_examples % block:
      raise ValueError(f"stateful fit: the {self.num_examples} examples must "
                       f"be whole blocks of reset_every * batch_size = "
                       f"{block} rows")

  def epoch(self, seed: int, epoch: int) -> tuple[None, np.ndarray]:
    block = self.batch_size * (self.reset_every or self.steps_per_epoch)
    return None, stateful_permutation(seed, epoch, self.num_examples, block,
                                      self.shuffle)


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
  reset_every = 0             # a schedule's carry resets: never (stateless)

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
  # Only written to the metrics rows (the optimizer holds the real one): a
  # number, or a function of the step (a schedule).
  log_learning_rate: Optional[Any] = None
  checkpoint_every_secs: float = 0.0  # also save when this long since the last
  nonfinite: str = "ignore"         # see NONFINITE_MODES
  # "log": a log line per metrics row; "bar": a live bar per epoch on stdout
  # (seqjax.progress) instead; "none": neither.
  progress: str = "log"
  # Model selection (seqjax.selection): the key of epoch_end_fn's dict that
  # selects, and whether higher is better. With it, each epoch's value is
  # tracked and saved with the checkpoints; fit(best_checkpoint=) keeps the
  # best epoch's state.
  select_metric: Optional[str] = None
  select_maximize: bool = True
  patience: int = 0                 # stop after so many epochs without a gain
  # "plateau": multiply the learning rate (in the optimizer state, see
  # make_optimizer) by lr_decay_factor after lr_patience epochs without a
  # gain; other schedules live in the optimizer alone.
  lr_schedule: str = "constant"
  lr_patience: int = 2
  lr_decay_factor: float = 0.5
  # Stop at an epoch end when another epoch as long as the last would pass
  # this many seconds of training (0: no budget).
  time_budget_secs: float = 0.0


@dataclasses.dataclass
class FitStats:
  steps_run: int = 0
  train_seconds: float = 0.0        # all training calls, compile included
  first_call_seconds: float = 0.0   # the first call (compile + K steps)
  steady_seconds: float = 0.0       # the calls after the first
  steady_steps: int = 0
  compiles: int = 0                 # of the train call, during this fit
  last_metrics: dict = dataclasses.field(default_factory=dict)
  final_carry: Any = None          # stateful fit: the carry after the last step
  nonfinite_skipped: int = 0        # steps skipped (FitConfig.nonfinite="skip")
  interrupted: bool = False         # should_stop() ended the run early
  # Model selection: the tracker's record (Tracker.to_json) after the last
  # epoch, and whether patience ended the run (after epoch stopped_epoch).
  selection: Optional[dict] = None
  stopped_early: bool = False
  stopped_epoch: Optional[int] = None
  stopped_on_budget: bool = False   # the time budget ended the run

  def samples_per_second(self, batch_size: int) -> float:
    if self.steady_steps and self.steady_seconds > 0:
      return self.steady_steps * batch_size / self.steady_seconds
    if self.train_seconds > 0:
      return self.steps_run * batch_size / self.train_seconds
    return 0.0


class MetricsLog:
  """Appends rows to ``<workdir>/metrics.jsonl`` (one JSON object a line),
  the record a resume trims, and hands each row to ``sinks`` (say a
  ``seqjax.tensorboard.TensorBoardLog``) after it is written."""

  def __init__(self, path: Optional[str], sinks: tuple = ()):
    self.path, self.sinks = path, tuple(sinks)

  def write(self, row: dict):
    if self.path is None:
      return
    # One whole line per write(2), fsynced: a crash never leaves half a row.
    reliability.append_line(self.path, json.dumps(row))
    for sink in self.sinks:
      sink.write(row)

  def close(self):
    for sink in self.sinks:
      sink.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the partial last batch is dropped: a new
  permutation each epoch means every example is still seen)."""
  return num_examples // batch_size


def make_schedule(data, config: FitConfig, batch_plan=None,
                  stateful: bool = False, reset_every: int = 0):
  """The schedule ``fit`` follows: ``batch_plan``, stateful blocks or
  shuffled rows; checks that it has a step."""
  if batch_plan is not None:
    if batch_plan.batch_size != config.batch_size:
      raise ValueError(f"batch_plan.batch_size {batch_plan.batch_size} != "
                       f"batch_size {config.batch_size}")
    if stateful:
      raise ValueError("stateful fit takes consecutive rows of one dataset, "
                       "not a batch_plan")
    schedule, n = batch_plan, batch_plan.num_examples
  else:
    n = len(next(iter(data.values())))
    schedule = (StatefulBlocks(n, config.batch_size, config.shuffle,
                               reset_every) if stateful else
                ShuffledRows(n, config.batch_size, config.shuffle))
  if schedule.steps_per_epoch == 0:
    raise ValueError(f"batch_size {config.batch_size} is larger than the {n} "
                     "training examples")
  return schedule


class _Feed:
  """The next call's inputs from a schedule: K steps of batch indices (the
  steps past ``limit`` or another dataset padded and marked invalid), carry
  resets, placed for the mesh."""

  def __init__(self, schedule, seed: int, k_max: int, mesh):
    self.schedule, self.seed = schedule, seed
    self.k_max, self.mesh = k_max, mesh
    self._epoch, self._order = -1, None

  def __call__(self, step: int, limit: int):
    """-> (dataset index or None, steps k, (idx_KB, valid_K, reset_K))."""
    spe, bsz, k_max = (self.schedule.steps_per_epoch,
                       self.schedule.batch_size, self.k_max)
    if step // spe != self._epoch:
      self._epoch = step // spe
      self._order = self.schedule.epoch(self.seed, self._epoch)
    dataset_S, rows = self._order
    k = min(k_max, limit - step,
            self.schedule.run_length(dataset_S, step % spe))
    offset = (step % spe) * bsz
    idx = np.zeros((k_max, bsz), np.int32)
    idx[:k] = rows[offset:offset + k * bsz].reshape(k, bsz)
    every = self.schedule.reset_every
    reset = (np.arange(step, step + k_max) % every == 0 if every
             else np.zeros(k_max, bool))
    dataset = None if dataset_S is None else int(dataset_S[step % spe])
    return dataset, k, self.place(idx, np.arange(k_max) < k, reset)

  def place(self, idx, valid, reset):
    if self.mesh is None:
      return idx, valid, reset
    return (sharding_lib.shard_indices(idx, self.mesh),
            *sharding_lib.replicate((valid, reset), self.mesh))


def _reduce(pending) -> dict:
  """Mean of each metric over the valid, finite steps of the pending calls
  ((metrics_K, k) each); with the guard's flags, also the steps skipped."""
  sums, count, skipped, guarded = {}, 0, 0, False
  for metrics_K, k in pending:
    host = dict(jax.device_get(metrics_K))
    guarded = guarded or "nonfinite" in host
    bad_K = np.asarray(host.pop("nonfinite", np.zeros(k)))[:k] > 0
    for name, values in host.items():
      sums[name] = sums.get(name, 0.0) + float(
          np.asarray(values)[:k][~bad_K].sum())
    count += int((~bad_K).sum())
    skipped += int(bad_K.sum())
  # No finite step in the window: NaN, not a misleading 0.
  row = {name: total / count if count else float("nan")
         for name, total in sums.items()}
  if guarded:
    row["nonfinite_skipped"] = skipped
  return row


def save_last_good(loop, good: int) -> str:
  """Saves a loop's last good state (step ``good``, when it trained past
  where it started) -> the sentence saying which checkpoint is kept."""
  if loop.checkpointer is None:
    return ""
  if good > loop.step_start:
    loop.save()
  last = loop.checkpointer.latest_step()
  return (f" The last good checkpoint (step {last}) in "
          f"{loop.checkpointer.directory} is kept; nothing non-finite was "
          "saved." if last is not None else " Nothing was saved.")


def nonfinite_what(loss: float, grad_norm: float) -> str:
  """What was not finite, for the message of a stopped run."""
  if not np.isfinite(loss):
    return f"loss {loss}"
  if not np.isfinite(grad_norm):
    return f"gradient norm {grad_norm} (loss {loss})"
  return f"parameters after the update (loss {loss})"


class _Loop:
  """The mutable part of one ``fit``: state and carry, the step, the calls
  whose metrics are not yet logged (``pending``) or whose non-finite flags
  are not yet read (``unchecked``), and the periodic actions on them."""

  def __init__(self, state, carry, config, spe, checkpointer, metrics_log,
               clock, mesh, tracker=None, best_checkpoint=None):
    self.state, self.carry, self.config, self.spe = state, carry, config, spe
    # Model selection: the tracker's record goes into every checkpoint; the
    # best epoch's state into best_checkpoint (see seqjax.selection).
    self.tracker, self.best_checkpoint = tracker, best_checkpoint
    self.total = spe * config.epochs
    self.step = self.step_start = int(state.step)
    self.checkpointer, self.metrics_log = checkpointer, metrics_log
    self.clock, self.stats = clock, FitStats()
    self.guarded = config.nonfinite != "ignore"
    self.pending, self.unchecked = [], None  # unchecked: (metrics_K, k, step)
    self.halted = (jnp.zeros((), bool) if mesh is None else
                   sharding_lib.replicate(np.zeros((), bool), mesh))
    self.t_start = self.t_log = time.perf_counter()
    self.t_first = self.t_steady = None
    self.step_log, self.t_ckpt = self.step, clock()
    self.t_fit = self.t_epoch = clock()   # the time budget's clock

  def next_boundary(self) -> int:
    """The first epoch end, log, checkpoint step or the end after ``step``."""
    ends = [(self.step // self.spe + 1) * self.spe, self.total]
    for every in (self.config.log_every_steps,
                  self.checkpointer and self.config.checkpoint_every_steps):
      if every:
        ends.append((self.step // every + 1) * every)
    return min(ends)

  def dispatch(self, train_call, data, k, inputs):
    """Runs one call; reads the previous call's flags while this one runs."""
    if self.t_first is None:
      self.t_first = time.perf_counter()
    self.state, self.carry, self.halted, metrics_K = train_call(
        self.state, self.carry, data, *inputs, self.halted)
    if self.guarded:
      self.monitor()
      self.unchecked = (metrics_K, k, self.step)
    self.pending.append((metrics_K, k))
    if self.stats.steps_run == 0:
      jax.block_until_ready(self.state.step)
      self.stats.first_call_seconds = time.perf_counter() - self.t_first
      self.t_steady = time.perf_counter()
    else:
      self.stats.steady_steps += k
    self.stats.steps_run += k
    self.step += k

  def monitor(self):
    """The non-finite monitor: reads the unchecked call's flags; with "stop"
    a bad step ends the run (``_stop_nonfinite``)."""
    if self.unchecked is None:
      return
    metrics_K, k, step_before = self.unchecked
    self.unchecked = None
    bad_K = np.asarray(metrics_K["nonfinite"])[:k] > 0
    if self.config.nonfinite == "stop" and bad_K.any():
      self._stop_nonfinite(metrics_K, int(np.argmax(bad_K)), step_before)
    self.stats.nonfinite_skipped += int(bad_K.sum())

  def due(self) -> tuple[bool, bool, bool]:
    """-> (log, checkpoint, epoch end) after this call."""
    cfg, step, end = self.config, self.step, self.step == self.total
    epoch_end = step % self.spe == 0
    log = bool(cfg.log_every_steps and step % cfg.log_every_steps == 0)
    ckpt = bool(cfg.checkpoint_every_steps and
                step % cfg.checkpoint_every_steps == 0)
    # A clock read, no device sync: the save itself waits for the device.
    ckpt = ckpt or bool(cfg.checkpoint_every_secs and self.clock() -
                        self.t_ckpt >= cfg.checkpoint_every_secs)
    ckpt = self.checkpointer is not None and (ckpt or epoch_end or end)
    return log or epoch_end or end, ckpt, epoch_end

  def write_row(self, pending, **fields) -> dict:
    """The one reduce-and-log: the mean metrics of ``pending`` and
    ``fields``, written to metrics.jsonl."""
    row = _reduce(pending)
    row.update(step=fields.pop("step", self.step),
               epoch=fields.pop("epoch", self.step / self.spe), **fields)
    if self.metrics_log:
      self.metrics_log.write(row)
    return row

  def log(self, **fields):
    now, step, total = time.perf_counter(), self.step, self.total
    rate = (step - self.step_log) / max(now - self.t_log, 1e-9)
    lr = learning_rate_of(self.state.opt_state)  # the optimizer's own, if any
    lr = self.config.log_learning_rate if lr is None else lr
    if lr is not None:
      fields["learning_rate"] = float(lr(step) if callable(lr) else lr)
    row = self.write_row(self.pending, steps_per_s=rate,
                         samples_per_s=rate * self.config.batch_size,
                         wall_s=now - self.t_start, **fields, time=time.time())
    self.pending, self.stats.last_metrics = [], row
    if self.config.progress == "log":
      logging.info("step %d/%d epoch %.2f loss %.4f token_acc %.4f "
                   "%.1f steps/s ETA %.0fs", step, total, step / self.spe,
                   row.get("loss", float("nan")),
                   row.get("token_accuracy", float("nan")), rate,
                   (total - step) / max(rate, 1e-9))
    self.t_log, self.step_log = now, step
    return row

  def save(self):
    if self.checkpointer is not None:
      self.checkpointer.save(self.state, carry=_carry_of(self.carry),
                             **self._selection_kwargs())
      self.t_ckpt = self.clock()

  def _selection_kwargs(self) -> dict:
    # Only a run that selects saves a record: others' checkpoints unchanged.
    return ({} if self.tracker is None else
            {"selection": self.tracker.to_json()})

  def evaluate(self, epoch_end_fn) -> tuple[bool, bool]:
    """Runs ``epoch_end_fn``, then the selection on its metrics; logs both.
    -> (the metric improved, patience is exhausted)."""
    epoch = self.step // self.spe
    extra = dict(epoch_end_fn(self.state, epoch) or {})
    improved, stop, fields = self.select(extra, epoch)
    if (extra or fields) and self.metrics_log:
      self.metrics_log.write({"step": self.step, "epoch": epoch,
                              "eval": True, "wall_s": time.perf_counter() -
                              self.t_start, "time": time.time(), **extra,
                              **fields})
    return improved, stop

  def select(self, extra: dict, epoch: int) -> tuple[bool, bool, dict]:
    """The tracker's update after ``epoch``, and the plateau schedule's cut:
    -> (improved, stop, fields for the metrics row)."""
    if self.tracker is None:
      return False, False, {}
    cfg, tracker = self.config, self.tracker
    improved = tracker.update(extra, self.step, epoch)
    fields = {"improved": improved, "epochs_since_best": tracker.bad_epochs}
    if (not improved and cfg.lr_schedule == "plateau" and
        tracker.plateau_due(cfg.lr_patience)):
      lr = float(learning_rate_of(self.state.opt_state)) * cfg.lr_decay_factor
      self.state = with_learning_rate(self.state, lr)
      tracker.cut()
      logging.info("%s has not improved for %d epoch(s): learning rate now "
                   "%.4g.", tracker.metric, cfg.lr_patience, lr)
    lr = learning_rate_of(self.state.opt_state)
    if lr is not None:
      fields["learning_rate"] = float(lr)
    return improved, tracker.exhausted(cfg.patience), fields

  def save_best(self):
    """The state of the best epoch so far, beside the latest ones."""
    if self.best_checkpoint is not None:
      self.best_checkpoint.save(self.state, self.tracker)

  def stop_early(self):
    tracker = self.tracker
    self.stats.stopped_early = True
    self.stats.stopped_epoch = tracker.last_epoch
    logging.info("Early stop after epoch %d: %s has not improved for %d "
                 "epochs (best %s at epoch %s).", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs, tracker.best,
                 tracker.best_epoch)

  def out_of_time(self) -> bool:
    """At an epoch end: would one more epoch like the last pass the time
    budget?"""
    now = self.clock()
    epoch_seconds, self.t_epoch = now - self.t_epoch, now
    budget = self.config.time_budget_secs
    if not budget or now - self.t_fit + epoch_seconds <= budget:
      return False
    self.stats.stopped_on_budget = True
    logging.info("Stopping at step %d: another %.0f s epoch would pass the "
                 "%.0f s training budget (%.0f s used).", self.step,
                 epoch_seconds, budget, now - self.t_fit)
    return True

  def interrupt(self):
    """``should_stop()``: logs the steps since the last row, saves, stops."""
    self.monitor()
    if self.pending:
      self.stats.last_metrics = self.write_row(self.pending, interrupted=True)
      self.pending = []
    self.save()
    self.stats.interrupted = True
    logging.warning("Stopped at step %d on request.", self.step)

  def _stop_nonfinite(self, metrics_K, j, step):
    """Step ``step + j + 1`` was not finite: the state (and carry) are the
    last good ones (step + j). Logs and saves them, then raises."""
    host = jax.device_get(metrics_K)
    bad, good = step + j + 1, step + j
    loss, grad_norm = float(host["loss"][j]), float(host["grad_norm"][j])
    # pending's last entry is this call; its steps before the bad one count.
    self.write_row(self.pending[:-1] + [(metrics_K, j)], step=good,
                   epoch=good / self.spe, nonfinite_step=bad,
                   nonfinite_loss=str(loss), nonfinite_grad_norm=str(grad_norm))
    saved = save_last_good(self, good)
    raise reliability.NonFiniteError(
        f"Non-finite {nonfinite_what(loss, grad_norm)} at step {bad} (epoch "
        f"{bad / self.spe:.2f}): the update was not applied and training "
        f"stopped.{saved} A lower learning rate, or nonfinite=\"skip\" (skip "
        "such steps), avoids this.")

  def finish(self):
    jax.block_until_ready(self.state.params)
    end = time.perf_counter()
    self.stats.train_seconds = end - self.t_start
    if self.stats.steps_run > 0 and self.stats.steady_steps:
      self.stats.steady_seconds = end - self.t_steady
    self.stats.final_carry = _carry_of(self.carry)
    if self.tracker is not None:
      self.stats.selection = self.tracker.to_json()


def _carry_of(carry):
  return carry.carry if isinstance(carry, StreamCarry) else None



def fit(state: TrainState, data, loss_fn, config: FitConfig, *,
        checkpointer=None, metrics_log: Optional[MetricsLog] = None,
        epoch_end_fn: Optional[Callable[[TrainState, int], dict]] = None,
        multi_step=None, initial_carry=None, carry=None, reset_every: int = 0,
        mesh=None, should_stop: Optional[Callable[[], bool]] = None,
        batch_plan: Optional[BucketPlan] = None,
        clock: Callable[[], float] = time.monotonic,
        selection: Optional[selection_lib.Tracker] = None,
        best_checkpoint=None,
        ) -> tuple[TrainState, FitStats]:
  """Trains ``state`` from its current step to ``epochs`` full epochs.

  ``data`` is a dict of equally long arrays; batches are rows of it, in the
  order of a schedule (``make_schedule``). Resumes from ``state.step``.
  Periodic actions after each jitted call (``multi_step``, default
  ``make_multi_step``): a metrics row every ``log_every_steps`` and at epoch
  ends; ``checkpointer.save(state, carry=)`` every ``checkpoint_every_steps``,
  when ``checkpoint_every_secs`` have passed on ``clock`` since the last
  save, at epoch ends and at the end; ``epoch_end_fn(state, epoch)`` after
  each epoch (its dict is logged); ``should_stop()``: when true, a checkpoint
  is saved at that step and fit returns with ``stats.interrupted``. With
  ``config.nonfinite="stop"`` a non-finite step raises
  ``reliability.NonFiniteError`` after saving the last good state and carry.

  Stateful training: with ``initial_carry`` (a carry pytree of batch size
  ``batch_size``), ``loss_fn(params, batch, carry) -> (loss, (metrics,
  carry))``; each step starts from the previous step's final carry, reset to
  ``initial_carry`` every ``reset_every`` steps (0: never). Batches are
  consecutive rows; shuffling permutes whole blocks of ``reset_every``
  batches. ``carry`` (default ``initial_carry``) is the carry at
  ``state.step``, as a checkpoint restores it; the last is
  ``stats.final_carry``.

  With a ``mesh`` (``seqjax.sharding.make_mesh``) each batch is split over
  its devices. With ``batch_plan`` (a ``BucketPlan``), ``data`` is a list of
  such dicts (length buckets, each with its own shapes): the step compiles
  once per dataset, all before the first step (in first_call_seconds).

  Model selection, with ``config.select_metric`` (a key of
  ``epoch_end_fn``'s dict): after each epoch a ``selection.Tracker``
  (``selection``, e.g. restored with a checkpoint; default a fresh one) reads
  the metric, and its record is saved with every checkpoint. Then, with
  ``best_checkpoint`` (``seqjax.checkpoint.BestCheckpoint``), an epoch that
  improved is saved there too; ``config.patience`` > 0 stops after that many
  epochs in a row without a gain (``stats.stopped_early``), a run resumed
  after such a stop at once; ``lr_schedule="plateau"`` multiplies the
  learning rate in the optimizer state by ``lr_decay_factor`` after
  ``lr_patience`` epochs without a gain. At an epoch end the evaluation and
  the selection come first, then the checkpoint, which so holds both.
  """
  tracker = _tracker(state, config, selection, best_checkpoint)
  stateful = initial_carry is not None
  schedule = make_schedule(data, config, batch_plan, stateful, reset_every)
  spe = schedule.steps_per_epoch
  if tracker is not None and tracker.exhausted(config.patience):
    logging.info("Stopped early after epoch %d (%s had not improved for %d "
                 "epochs); nothing to train.", tracker.last_epoch,
                 tracker.metric, tracker.bad_epochs)
    return state, FitStats(selection=tracker.to_json(), stopped_early=True,
                           stopped_epoch=tracker.last_epoch)
  if int(state.step) >= spe * config.epochs:
    logging.info("Checkpoint at step %d already covers %d epoch(s); nothing "
                 "to train.", int(state.step), config.epochs)
    return state, FitStats(selection=tracker and tracker.to_json())
  train_call = multi_step or make_multi_step(loss_fn, config.nonfinite, mesh)
  carry = (StreamCarry(initial_carry if carry is None else carry,
                       initial_carry) if stateful else ())
  state, data = _place(state, data, mesh, config.batch_size, stateful)
  loop = _Loop(state, carry, config, spe, checkpointer, metrics_log, clock,
               mesh, tracker, best_checkpoint)
  feed = _Feed(schedule, config.seed, max(1, config.steps_per_call), mesh)
  logging.info("Training %d steps (%d per epoch, batch %d) from step %d.",
               loop.total, spe, config.batch_size, loop.step)
  bar = (progress_lib.Progress("bar", loop.total, spe, start_step=loop.step)
         if config.progress == "bar" else None)  # "log": loop.log's lines
  if batch_plan is not None:
    _warm_up(loop, train_call, data, feed)
  while loop.step < loop.total:
    dataset, k, inputs = feed(loop.step, loop.next_boundary())
    loop.dispatch(train_call, data if dataset is None else data[dataset], k,
                  inputs)
    log, ckpt, epoch_end = loop.due()
    if log or ckpt:
      loop.monitor()  # before anything is logged, saved or evaluated
    row = loop.log() if log else {}
    if bar is not None:  # the loss only where the host has it: log rows
      bar.update(loop.step, row.get("loss"))
    improved = stop = False
    if epoch_end and epoch_end_fn is not None:
      improved, stop = loop.evaluate(epoch_end_fn)
    if ckpt:
      loop.save()  # after the selection: the record and the LR it set
    if improved:
      loop.save_best()
    if stop and loop.step < loop.total:
      loop.stop_early()
      break
    if epoch_end and loop.step < loop.total and loop.out_of_time():
      break
    if should_stop is not None and loop.step < loop.total and should_stop():
      loop.interrupt()
      break
  loop.finish()
  if bar is not None:
    bar.close()
  loop.stats.compiles = compiles_of(train_call)  # its compiles so far
  return loop.state, loop.stats


def _tracker(state, config: FitConfig, selection, best_checkpoint):
  """The run's selection tracker (None without ``select_metric``); refuses
  the selection features without one."""
  if config.lr_schedule not in LR_SCHEDULES:
    raise ParameterError("lr_schedule", config.lr_schedule,
                         f"expected one of {', '.join(LR_SCHEDULES)}")
  if config.patience < 0:
    raise ParameterError("patience", config.patience, "must be >= 0")
  if config.select_metric is None:
    wanted = [name for name, on in (
        ("patience", config.patience > 0),
        ("lr_schedule", config.lr_schedule == "plateau"),
        ("best_checkpoint", best_checkpoint is not None)) if on]
    if wanted:
      raise ValueError(f"{', '.join(wanted)}: model selection needs "
                       "FitConfig.select_metric")
    return None
  if (config.lr_schedule == "plateau" and
      learning_rate_of(state.opt_state) is None):
    raise ValueError("lr_schedule='plateau' needs the learning rate in the "
                     "optimizer state: make_optimizer(schedule='plateau')")
  if selection is not None:
    return selection
  return selection_lib.Tracker(config.select_metric, config.select_maximize)


def _place(state, data, mesh, batch_size, stateful):
  """State and data on the device, or replicated on the mesh."""
  if mesh is None:
    return state, jax.device_put(data)
  if stateful:
    raise SeqjaxError(f"stateful training runs on one device; the mesh has "
                      f"{mesh.size}")
  sharding_lib.check_batch_size(batch_size, mesh)
  return sharding_lib.replicate(state, mesh), sharding_lib.replicate(data, mesh)


def _warm_up(loop, train_call, data, feed):
  """Compiles the train call for every dataset's shapes, with all K steps
  skipped (the state comes back unchanged): no compile falls inside the
  epoch, and first_call_seconds counts them all."""
  loop.t_first = time.perf_counter()
  _, _, (idx, _, reset) = feed(loop.step, loop.total)
  none_valid = feed.place(idx, np.zeros(feed.k_max, bool), reset)
  for dataset in data:
    loop.state, loop.carry, _, _ = train_call(
        loop.state, loop.carry, dataset, *none_valid, loop.halted)
