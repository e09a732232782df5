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


class TracedOptimizer(optax.GradientTransformationExtraArgs):
  """A transformation whose numbers (learning rate, clip norm) are inputs of
  its update, ``update(updates, state, params, hparams=)``, so a program
  built with it is the same for every value. ``hparams``: this run's values
  as float32 arrays, for the caller to pass; an update without them uses the
  same values as constants."""


def make_optimizer(name: str, learning_rate: Optional[float] = None, *,
                   schedule: str = "constant", clip_norm: float = 0.0,
                   warmup_steps: int = 0, total_steps: int = 0
                   ) -> TracedOptimizer:
  """adam / rmsprop / sgd with Keras' defaults (epsilon 1e-7, rho 0.9).

  ``clip_norm`` > 0: gradients are clipped to that global norm first
  (``optax.clip_by_global_norm``). A ``schedule`` other than "constant"
  (``LR_SCHEDULES``) wraps the optimizer in ``optax.inject_hyperparams``, so
  the learning rate is part of the optimizer state: checkpointed, read by
  ``learning_rate_of`` and set by ``with_learning_rate`` without a compile.
  "warmup_decay" needs ``total_steps`` (the steps of the whole run). The
  defaults give the plain optax optimizer's state and numbers.

  The learning rate (warmup_decay: its peak; plateau: the state's) and the
  clip norm are ``TracedOptimizer`` inputs; whether it clips is not.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
  if schedule not in LR_SCHEDULES:
    raise ParameterError("schedule", schedule,
                         f"expected one of {', '.join(LR_SCHEDULES)}")
  if not clip_norm >= 0:
    raise ParameterError("clip_norm", clip_norm, "must be >= 0")
  if schedule == "warmup_decay" and total_steps < 1:
    raise ParameterError("total_steps", total_steps,
                         "warmup_decay needs the run's steps (>= 1)")
  lr = DEFAULT_LEARNING_RATES[name] if learning_rate is None else learning_rate
  clips = clip_norm > 0

  def build(learning_rate=lr, clip_norm=clip_norm):
    def inner(learning_rate):
      tx = base_optimizer(name, learning_rate)
      if clips:
        return optax.chain(optax.clip_by_global_norm(clip_norm), tx)
      return tx

    if schedule == "constant":
      return inner(learning_rate)
    if schedule == "warmup_decay":
      learning_rate = warmup_cosine(learning_rate, warmup_steps, total_steps)
    return optax.inject_hyperparams(inner)(learning_rate=learning_rate)

  # plateau's rate lives in the optimizer state, an input already.
  defaults = {} if schedule == "plateau" else {"learning_rate": lr}
  if clips:
    defaults["clip_norm"] = clip_norm
  return traced_optimizer(build, defaults)


def traced_optimizer(build, defaults: dict) -> TracedOptimizer:
  """``build(**defaults)``'s transformation, built again in each update from
  the ``hparams`` passed (tracers in a jitted step). ``build``'s state must
  not depend on the values: ``init`` uses the defaults."""

  def init(params):
    return build(**defaults).init(params)

  def update(updates, state, params=None, *, hparams=None, **extra_args):
    del extra_args
    values = defaults if hparams is None else hparams
    return build(**values).update(updates, state, params)

  tx = TracedOptimizer(init, update)
  tx.hparams = {k: jnp.asarray(v, jnp.float32) for k, v in defaults.items()}
  return tx


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


