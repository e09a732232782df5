"""The pure train step, its non-finite guard, the K-steps-per-call scanned
train call, and counting their compiles.

At small batches the cost of a step is dispatch, not arithmetic, so a train
call runs K steps: a ``lax.scan`` over batch indices into the training set,
which lives on the device. Steps past a boundary are skipped by ``lax.cond``,
so the scan always has the same shape and the call compiles exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from seqjax import sharding as sharding_lib
from seqjax import stateful as stateful_lib
from seqjax.training.losses import Batch, LossFn, StatefulLossFn
from seqjax.training.optimizers import TrainState


# What a step does with a non-finite loss, gradient or updated parameter:
# "ignore" applies it (the plain step), "stop" leaves the state at the last
# good step and fit() stops there, "skip" drops the update and goes on.
NONFINITE_MODES = ("ignore", "stop", "skip")


def hparams_of(loss_fn, tx) -> dict:
  """The numbers a train call takes as inputs: the loss's
  (``loss_fn.hparams``) and the optimizer's (``TracedOptimizer.hparams``);
  None for either without them (its numbers are constants then)."""
  return {"loss": getattr(loss_fn, "hparams", None),
          "optimizer": getattr(tx, "hparams", None)}


def _loss_and_grads(loss_fn, params, batch, carry, step=None, hparams=None):
  """-> (loss, aux, new carry, grads); ``carry`` () for a stateless loss
  ``loss_fn(params, batch)``, else ``loss_fn(params, batch, carry)``. A loss
  with ``takes_step`` (dropout) also gets the train step's ``step``, one
  with ``hparams`` the loss's part of ``hparams`` (``hparams_of``)."""
  if getattr(loss_fn, "takes_step", False):
    loss_fn = functools.partial(loss_fn, step=step)
  if hparams is not None and hparams["loss"] is not None:
    loss_fn = functools.partial(loss_fn, hparams=hparams["loss"])
  if carry == ():
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch)
    return loss, aux, carry, grads
  (loss, (aux, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch, carry)
  return loss, aux, carry, grads


def make_step(loss_fn, nonfinite: str = "ignore"):
  """-> pure ``step(state, carry, batch) -> (state, carry, metrics)``; see
  ``make_train_step``. A step not applied also keeps the carry it was given
  (a non-finite forward pass may have spoilt the new one)."""
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}; got "
                     f"{nonfinite!r}")

  def step(state: TrainState, carry, batch: Batch, hparams=None):
    loss, aux, new_carry, grads = _loss_and_grads(
        loss_fn, state.params, batch, carry, state.step, hparams)
    new = _apply_gradients(state, grads, hparams)
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


def _apply_gradients(state: TrainState, grads, hparams) -> TrainState:
  """``state.apply_gradients`` with the optimizer's ``hparams`` passed to
  its update."""
  if hparams is None or hparams["optimizer"] is None:
    return state.apply_gradients(grads=grads)
  bound = optax.GradientTransformation(
      state.tx.init, functools.partial(state.tx.update,
                                       hparams=hparams["optimizer"]))
  return state.replace(tx=bound).apply_gradients(grads=grads).replace(
      tx=state.tx)


def make_train_step(loss_fn: LossFn, nonfinite: str = "ignore"):
  """-> pure ``train_step(state, batch) -> (state, metrics)``.

  ``nonfinite`` "stop" or "skip": a step whose loss, gradients or updated
  parameters are not all finite is not applied (parameters and optimizer
  state stay; with "skip" the step count still advances, so the data order is
  kept); its metrics have ``nonfinite`` 1.0, and ``grad_norm`` is reported.
  ``hparams`` (``hparams_of``): the numbers as inputs; None, as constants.
  """
  step = make_step(loss_fn, nonfinite)

  def train_step(state: TrainState, batch: Batch, hparams=None):
    state, _, metrics = step(state, (), batch, hparams)
    return state, metrics

  return train_step


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all()
                            for x in jax.tree.leaves(tree)] or [True]))


def jit_train_step(loss_fn: LossFn):
  return jax.jit(make_train_step(loss_fn), donate_argnames="state")


class StreamCarry(NamedTuple):
  """The carry of a stateful run as a train call takes it: the carry now and
  the one a reset restores."""
  carry: Any
  initial: Any


# Each train call gets its own name, so its compiles are counted apart.
CALL_IDS = itertools.count()


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

  The numbers of the loss and the optimizer (``hparams_of``) are inputs of
  the compiled call, so it is the same program for every learning rate,
  clip norm and seed (the dropout key).
  """
  train_call = _train_call(loss_fn, nonfinite, mesh)
  train_call.__name__ = f"train_call_{next(CALL_IDS)}"
  if mesh is None:
    jitted = jax.jit(train_call, donate_argnames="state")
  else:
    repl = sharding_lib.replicated(mesh)
    idx = sharding_lib.indices_sharding(mesh)
    jitted = jax.jit(train_call, donate_argnames="state",
                     in_shardings=(repl,) * 4 + (idx, repl, repl, repl),
                     out_shardings=repl)
  return HparamCall(jitted, loss_fn)


class HparamCall:
  """A jitted call taking ``hparams`` first, called without them: they are
  read from the loss and the state's optimizer at each call."""

  def __init__(self, jitted, loss_fn):
    self.jitted, self.loss_fn = jitted, loss_fn
    self.__name__ = jitted.__name__

  def _args(self, state, args):
    return (hparams_of(self.loss_fn, state.tx), state) + tuple(args)

  def __call__(self, state, *args):
    return self.jitted(*self._args(state, args))

  def lower(self, state, *args):
    return self.jitted.lower(*self._args(state, args))


def train_call_fn(loss_fn, nonfinite: str = "ignore", mesh=None):
  """``make_multi_step``'s call before ``jax.jit``: to map over members (the
  numbers of loss and optimizer are constants of it)."""
  train_call = _train_call(loss_fn, nonfinite, mesh)
  return functools.partial(train_call, None)


def _train_call(loss_fn, nonfinite: str, mesh):
  """``train_call_fn``'s call with ``hparams`` (or None) first."""
  step = make_step(loss_fn, nonfinite)

  def gather(data, idx_B):
    batch = jax.tree.map(lambda a: a[idx_B], data)
    if mesh is not None:
      batch = jax.lax.with_sharding_constraint(
          batch, sharding_lib.batch_sharding(mesh))
    return batch

  def train_call(hparams, state, carry, data, idx_KB, valid_K, reset_K,
                 halted):
    def one(state_carry, batch, reset):
      state, carry = state_carry
      if isinstance(carry, StreamCarry):
        now = stateful_lib.reset_carry(reset, carry.initial, carry.carry)
        state, now, metrics = step(state, now, batch, hparams)
        return (state, carry._replace(carry=now)), metrics
      state, carry, metrics = step(state, carry, batch, hparams)
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

  return train_call


def make_stateful_train_step(loss_fn: StatefulLossFn):
  """-> pure ``train_step(state, batch, carry) -> (state, carry, metrics)``.

  The incoming carry is a constant of the step (as in Keras' stateful RNNs,
  gradients stop at the batch boundary); the returned carry is the batch's
  final carry, for the next batch.
  """
  step = make_step(loss_fn)

  def train_step(state: TrainState, batch: Batch, carry):
    return step(state, carry, batch)

  return train_step

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

