"""Optimizers (Keras' defaults), learning-rate schedules and the train state."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from seqjax.errors import ParameterError

TrainState = train_state.TrainState


OPTIMIZERS = ("adam", "rmsprop", "sgd")
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
    tx = base_optimizer(name, learning_rate)
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


def base_optimizer(name: str, lr) -> optax.GradientTransformation:
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


