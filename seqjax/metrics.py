"""Losses and metrics over padded token sequences (0 = padding by default)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def masked_cross_entropy(logits_BTV: Array, targets_BT: Array,
                         mask_BT: Optional[Array] = None) -> Array:
  """Mean cross-entropy over the real (mask True) target steps."""
  losses_BT = optax.softmax_cross_entropy_with_integer_labels(
      logits_BTV.astype(jnp.float32), targets_BT)
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
