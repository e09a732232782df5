"""Ensemble decoding: M models decoded as one.

``Ensemble((model_a, model_b))`` is a Flax module that every decoder takes
as a model (greedy, sampling, beam search; ``make_decoder``): its
``encode_for_decoding`` runs every member's, its carry is the tuple of the
members' carries (beam search gathers each member's per beam, its
``Shared`` parts included, as it would alone), and its ``decode_step`` steps
every member on the same tokens. Members may differ in architecture (sizes,
layers, attention) but must share the target vocabulary, and the source
ids they are fed. Its parameters are the members' under one tree:
``ensemble_params([params_a, params_b])``.

The rule, for M members: a step's distribution is the renormalised
geometric mean of the members', ``p(y) ∝ exp(mean_m log p_m(y))``, the
log-probabilities averaged.
``decode_step`` returns the members' mean logits as its logits: since
``log p_m = logits_m - logsumexp(logits_m)``, the mean log-probabilities
differ from the mean logits by one constant a row, which every decoder
removes (beam search and scores take the log-softmax of the logits, greedy
their argmax, sampling and softmax feedback their softmax). So the
renormalisation is the decoders' own, and an ensemble of one decodes
exactly as its model, bit for bit. fairseq's ``EnsembleModel`` averages
the probabilities instead (``logsumexp_m log p_m - log M``, already
normalised), another distribution.

The ensemble's loss (``make_ensemble_eval_step``) is that of the
probabilities' mean, ``log p(y) = logsumexp_m log p_m(y) - log M``, teacher
forced: a likelihood needs a normalised distribution, and the mixture's is
one without a renormalisation over the vocabulary.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import metrics as metrics_lib
from seqjax.training import losses as losses_lib

Array = jax.Array
FIELD = "members"  # Flax names the members' subtrees members_0, members_1..


def _mean(logits: Sequence[Array]) -> Array:
  total_BV = logits[0]
  for logits_BV in logits[1:]:
    total_BV = total_BV + logits_BV
  return total_BV / len(logits)


class Ensemble(nn.Module):
  """Models decoded together, their log-probabilities averaged (see the
  module docstring). Decoding only: it has no ``__call__``."""

  members: tuple

  def __post_init__(self):
    if not self.members:
      raise ValueError("an ensemble needs at least one model")
    for side in ("src_vocab", "tgt_vocab"):
      sizes = {getattr(m, side, None) for m in self.members}
      if len(sizes) != 1:
        raise ValueError(f"ensemble members have different {side} sizes: "
                         f"{sorted(sizes, key=str)}")
    if not all(getattr(m, "takes_decoder_input", True)
               for m in self.members):
      raise ValueError("ensemble members must decode step by step")
    super().__post_init__()

  @property
  def tgt_vocab(self) -> int:
    return self.members[0].tgt_vocab

  @property
  def attention(self) -> str:
    # The carry is a tuple: no one model's attention weights to record.
    return "none"

  def encode_for_decoding(self, src_BS: Array,
                          src_mask_BS: Optional[Array] = None) -> tuple:
    return tuple(m.encode_for_decoding(src_BS, src_mask_BS)
                 for m in self.members)

  def _steps(self, step_name: str, x, state: tuple) -> tuple[Array, tuple]:
    outs = [getattr(m, step_name)(x, s) for m, s in zip(self.members, state)]
    return _mean([logits for logits, _ in outs]), tuple(s for _, s in outs)

  def decode_step(self, token_B: Array, state: tuple) -> tuple[Array, tuple]:
    """Every member's step on ``token_B`` -> (the mean logits (B, V), the
    members' states)."""
    return self._steps("decode_step", token_B, state)

  def decode_step_dense(self, x_BV: Array, state: tuple
                        ) -> tuple[Array, tuple]:
    """Every member fed the same distribution ``x_BV``."""
    return self._steps("decode_step_dense", x_BV, state)


def ensemble_params(member_params: Sequence[Any]) -> dict:
  """The members' parameters (each ``{"params": ...}``, in the members'
  order) as one ``Ensemble``'s."""
  collections = dict.fromkeys(c for p in member_params for c in p)
  return {c: {f"{FIELD}_{i}": p[c] for i, p in enumerate(member_params)
              if c in p} for c in collections}


def member_params(params: dict, i: int) -> dict:
  """Member ``i``'s parameters from an ``Ensemble``'s."""
  return {c: tree[f"{FIELD}_{i}"] for c, tree in params.items()
          if f"{FIELD}_{i}" in tree}


def make_ensemble_eval_step(models: Sequence[Any]):
  """-> jitted ``eval_step(params, batch) -> {"loss", "token_accuracy"}`` of
  the ensemble of ``models`` (``params``: ``ensemble_params`` of theirs):
  each member teacher forced, the loss the mean cross-entropy of the
  members' mean probability of each target token, the accuracy that of
  its argmax (the batch as ``losses.make_seq2seq_loss`` takes it)."""
  log_m = float(np.log(len(models)))

  @jax.jit
  def eval_step(params, batch):
    logp_MBTV = jnp.stack([
        jax.nn.log_softmax(losses_lib.teacher_forced_logits(
            m, member_params(params, i), batch).astype(jnp.float32), -1)
        for i, m in enumerate(models)])
    logp_BTV = jax.nn.logsumexp(logp_MBTV, axis=0) - log_m
    # Cross-entropy of log-probabilities is the loss of logits that are them.
    loss = metrics_lib.masked_cross_entropy(logp_BTV, batch["target"],
                                            batch.get("target_mask"))
    acc = metrics_lib.masked_token_accuracy(
        jnp.argmax(logp_BTV, -1), batch["target"], batch.get("target_mask"))
    return {"loss": loss, "token_accuracy": acc}
  return eval_step
