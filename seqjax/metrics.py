"""Losses and metrics over padded token sequences (0 = padding by default)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def masked_cross_entropy(logits_BTV: Array, targets_BT: Array,
                         mask_BT: Optional[Array] = None,
                         label_smoothing: float = 0.0) -> Array:
  """Mean cross-entropy over the real (mask True) target steps.

  ``label_smoothing`` e: the target distribution is ``1 - e`` on the target
  and ``e / V`` on every class (Szegedy et al. 2016)."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  if label_smoothing:
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None],
                                  axis=-1)[..., 0]
    losses_BT = (1.0 - label_smoothing) * nll_BT - (
        label_smoothing * logp_BTV.mean(axis=-1))
  else:
    losses_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV, targets_BT)
  if mask_BT is None:
    return losses_BT.mean()
  mask_BT = mask_BT.astype(jnp.float32)
  return (losses_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)


def masked_token_accuracy(pred_BT, targets_BT, mask_BT=None):
  """Fraction of real target steps predicted right (works on jnp or np)."""
  xp = jnp if isinstance(pred_BT, jax.Array) else np
  right = (pred_BT == targets_BT)
  if mask_BT is None:
    return right.mean()
  mask = mask_BT.astype(right.dtype) if xp is np else mask_BT
  return (right & mask).sum() / xp.maximum(mask.sum(), 1)


def exact_sequence_accuracy(pred_BT, targets_BT, mask_BT=None):
  """A sequence counts only if every real target step is right."""
  right = (pred_BT == targets_BT)
  if mask_BT is not None:
    right = right | ~mask_BT.astype(bool)
  return right.all(axis=-1).mean()
