"""Stateful recurrence across batches (Keras' ``stateful=True``) as values.

In Keras a stateful RNN keeps its state in the layer: the final state of row
``i`` of a batch becomes the initial state of row ``i`` of the next batch,
until ``reset_states()``. Here the carry is an explicit value instead: a step
takes it and returns the new one, and whoever loops resets it
(``seqjax.train.fit(..., initial_carry=, reset_every=)`` for training,
``scan_batches`` below for prediction).

Layout. One *stream* (in the echo task: the samples of one sequence) is R rows
in order, cut into K = R / B batches of B consecutive rows, so row ``i`` of
batch ``k + 1`` continues row ``i`` of batch ``k``, i.e. the sample B rows
earlier, not the previous one (Keras' rule, and half of why the echo
tutorial's "beginner's mistake" fails). Independent streams can run side by
side: ``to_batches`` puts batch ``k`` of S streams into one (S * B)-row batch,
so a single ``lax.scan`` over k predicts them all.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Carry = Any  # a pytree of (B, H) arrays


def reset_carry(reset, initial_carry: Carry, carry: Carry) -> Carry:
  """``initial_carry`` where ``reset`` (a scalar bool), else ``carry``."""
  return jax.tree.map(lambda i, c: jnp.where(reset, i, c), initial_carry, carry)


def check_divides(rows: int, batch_size: int) -> None:
  if batch_size < 1 or rows % batch_size:
    raise ValueError(f"batch_size {batch_size} must divide the {rows} rows of "
                     "a stream: a stateful batch continues the previous one "
                     "row by row")


def to_batches(tree, batch_size: int):
  """Rows (S, R, ...) of S streams -> batches (K, S * B, ...), K = R / B.

  Batch ``k`` holds rows ``k*B .. k*B + B - 1`` of stream 0, then of stream 1,
  and so on. Works on NumPy and jax arrays.
  """
  def one(a):
    s, r = a.shape[:2]
    check_divides(r, batch_size)
    k = r // batch_size
    a = a.reshape((s, k, batch_size) + a.shape[2:])
    return a.swapaxes(0, 1).reshape((k, s * batch_size) + a.shape[3:])
  return jax.tree.map(one, tree)


def from_batches(tree, num_streams: int):
  """The inverse of ``to_batches``: (K, S * B, ...) -> (S, R, ...)."""
  def one(a):
    k, sb = a.shape[:2]
    b = sb // num_streams
    a = a.reshape((k, num_streams, b) + a.shape[2:]).swapaxes(0, 1)
    return a.reshape((num_streams, k * b) + a.shape[3:])
  return jax.tree.map(one, tree)


def scan_batches(apply_fn: Callable, params, batches, initial_carry: Carry,
                 reset_every: int = 0):
  """Runs ``apply_fn(params, batch, carry) -> (outputs, carry)`` over the K
  batches of ``batches`` (leading axis K) in order, threading the carry.

  Before batch ``k`` the carry is reset to ``initial_carry`` when
  ``reset_every`` and ``k % reset_every == 0`` (0: never; 1: every batch,
  i.e. stateless). Returns (outputs stacked over K, final carry). Pure: jit
  the caller.
  """
  k = jax.tree.leaves(batches)[0].shape[0]
  resets = (np.arange(k) % reset_every == 0) if reset_every else np.zeros(
      k, bool)

  def body(carry, inputs):
    batch, reset = inputs
    carry = reset_carry(reset, initial_carry, carry)
    outputs, carry = apply_fn(params, batch, carry)
    return carry, outputs

  carry, outputs = jax.lax.scan(body, initial_carry, (batches, resets))
  return outputs, carry


def make_classifier_predict(model, batch_size: int, stateful: bool):
  """-> jitted ``predict(params, inputs) -> logits`` of a
  ``RecurrentClassifier``-like ``model``; ``inputs``: ``x`` (and ``x_mask``)
  as (S, R, ...) = the R samples of S sequences.

  Stateful: as Keras' ``predict(X, batch_size)`` after ``reset_states()``:
  each sequence's samples in batches of ``batch_size``, the carry threaded
  through them (all S sequences side by side in one scan). Otherwise every
  sample starts from the zero carry.
  """

  def apply(params, batch, carry):
    return model.apply(params, batch["x"], carry, batch.get("x_mask"))

  @jax.jit
  def predict(params, inputs):
    s, r = inputs["x"].shape[:2]
    if stateful:
      batches = to_batches(inputs, batch_size)
      logits, _ = scan_batches(
          apply, params, batches, model.initial_carry(s * batch_size))
      return from_batches(logits, s)
    flat = jax.tree.map(lambda a: a.reshape((s * r,) + a.shape[2:]), inputs)
    logits, _ = apply(params, flat, None)
    return logits.reshape((s, r) + logits.shape[1:])

  return predict
