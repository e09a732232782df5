"""Losses of the model kinds (teacher forced, free running, classifier) and
their evaluation steps."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from seqjax import metrics as metrics_lib

Batch = dict[str, Any]
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]
# Stateful: loss_fn(params, batch, carry) -> (loss, (metrics, new_carry)).
StatefulLossFn = Callable[[Any, Batch, Any],
                          tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


def loss_hparams(dropout_seed: Optional[int]) -> dict:
  """A sequence loss's numbers as arrays, inputs of the programs that take
  them (``hparams=``): the dropout key of ``dropout_seed``.

  The dropout rate and the label smoothing stay constants of the program:
  XLA compiles a division or product by a constant otherwise than by an
  input (a reciprocal, another fused multiply-add), so as inputs they would
  change the last bits of the losses and, through them, the parameters."""
  if dropout_seed is None:
    return {}
  return {"dropout_key": jax.random.key(dropout_seed)}


def _dropout_rngs(hparams: dict, step) -> Optional[dict]:
  """The "dropout" rng of a train step: the run's key folded with the step,
  so a resumed run draws the same masks. None (evaluation): no dropout."""
  if "dropout_key" not in hparams or step is None:
    return None
  return {"dropout": jax.random.fold_in(hparams["dropout_key"], step)}


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

  ``loss_fn.hparams`` (``loss_hparams``) holds the dropout key; the train
  and evaluation steps pass it back as ``hparams=``, an input of their
  programs, so another seed is the same program.
  """
  defaults = loss_hparams(dropout_seed)

  def loss_fn(params, batch, step=None, hparams=None):
    hparams = defaults if hparams is None else hparams
    rngs = _dropout_rngs(hparams, step)
    logits_BTV = teacher_forced_logits(model, params, batch, rngs)
    return _sequence_loss(logits_BTV, batch, batch.get("target_mask"),
                          label_smoothing)

  loss_fn.takes_step = dropout_seed is not None
  loss_fn.hparams = defaults
  return loss_fn


def teacher_forced_logits(model, params, batch, rngs=None):
  """The forward pass of ``make_seq2seq_loss``: logits (B, T, V) of each
  target step, the decoder fed ``dec_in`` (a model with
  ``takes_decoder_input = False`` reads the source alone)."""
  if getattr(model, "takes_decoder_input", True):
    return model.apply(params, batch["src"], batch["dec_in"],
                       batch.get("src_mask"), batch.get("target_mask"),
                       rngs=rngs)
  return model.apply(params, batch["src"], batch.get("src_mask"), rngs=rngs)


def make_token_log_probs(model):
  """-> jitted ``fn(params, batch) -> (B, T)``: each target token's
  log-probability under ``model`` fed the previous target tokens (the
  evaluation loss's forward pass, no dropout); 0 where ``target_mask`` is
  False."""
  @jax.jit
  def token_log_probs(params, batch):
    logits_BTV = teacher_forced_logits(model, params, batch)
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    logp_BT = jnp.take_along_axis(logp_BTV, batch["target"][..., None],
                                  axis=-1)[..., 0]
    mask = batch.get("target_mask")
    return logp_BT if mask is None else jnp.where(mask, logp_BT, 0.0)
  return token_log_probs


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
  defaults = loss_hparams(dropout_seed)

  def loss_fn(params, batch, step=None, hparams=None):
    hparams = defaults if hparams is None else hparams
    mask = batch.get("target_mask")
    logits_BTV = model.apply(params, batch["src"], batch["target"].shape[1],
                             start_id, batch.get("src_mask"), feedback,
                             method="free_running",
                             rngs=_dropout_rngs(hparams, step))
    return _sequence_loss(logits_BTV, batch, mask, label_smoothing)

  loss_fn.takes_step = dropout_seed is not None
  loss_fn.hparams = defaults
  return loss_fn

def make_eval_step(loss_fn: LossFn):
  """-> jitted ``eval_step(params, batch) -> metrics`` (no update); a loss
  with ``hparams`` gets them as inputs of the program."""
  hparams = getattr(loss_fn, "hparams", None)
  if hparams is None:
    @jax.jit
    def eval_step(params, batch):
      return _metrics(*loss_fn(params, batch))
    return eval_step

  @jax.jit
  def eval_step_of(hparams, params, batch):
    return _metrics(*loss_fn(params, batch, hparams=hparams))

  def eval_step(params, batch):
    return eval_step_of(hparams, params, batch)

  eval_step.lower = lambda params, batch: eval_step_of.lower(hparams, params,
                                                             batch)
  return eval_step


def _metrics(loss, aux) -> dict:
  return {"loss": loss, **aux}


def make_stateful_eval_step(loss_fn: StatefulLossFn):
  """-> jitted ``eval_step(params, batch, carry) -> (metrics, carry)``."""

  @jax.jit
  def eval_step(params, batch, carry):
    loss, (aux, carry) = loss_fn(params, batch, carry)
    return {"loss": loss, **aux}, carry

  return eval_step
