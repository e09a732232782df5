"""The encoder of ``seqjax.models.Seq2Seq``: stacked, optionally
bidirectional recurrent layers over the source, and the bridge from their
final carries to the decoder's start carries.

Plain functions over the model's bound layers: the layers stay parameters of
the model itself, so its parameter tree keeps the names ``encoder``,
``encoder_backward``, ``encoder_1``, ``bridge_0`` ...
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def reverse_by_length(x_BS: Array, lengths_B: Array) -> Array:
  """Each row's first ``length`` steps reversed, its padding left in place
  (ids (B, S) or vectors (B, S, F)): a backward recurrence then starts at
  the last real token."""
  steps = x_BS.shape[1]
  t_S = jnp.arange(steps)
  idx_BS = jnp.where(t_S[None] < lengths_B[:, None],
                     lengths_B[:, None] - 1 - t_S[None], t_S[None])
  if x_BS.ndim == 3:
    idx_BS = idx_BS[..., None]
  return jnp.take_along_axis(x_BS, idx_BS, axis=1)


def encode_layers(forwards: Sequence, backwards: Sequence, x_BSF: Array,
                  src_mask_BS: Optional[Array], drop: Callable[[Array], Array]
                  ) -> tuple[Array, list]:
  """The layers over the (embedded, dropped) source -> outputs (B, S, M) of
  the top layer, final carries per layer (a forward and, when ``backwards``
  is not empty, a backward one each). ``drop`` applies between layers."""
  batch, steps = x_BSF.shape[:2]
  lengths_B = (jnp.full((batch,), steps, jnp.int32) if src_mask_BS is None
               else src_mask_BS.sum(-1))
  finals = []
  x = x_BSF
  for i, forward in enumerate(forwards):
    out_BSH, carry = forward(x, mask=src_mask_BS)
    finals.append(carry)
    if backwards:
      back_BSH, back = backwards[i](reverse_by_length(x, lengths_B),
                                    mask=src_mask_BS)
      out_BSH = jnp.concatenate(
          [out_BSH, reverse_by_length(back_BSH, lengths_B)], axis=-1)
      finals.append(back)
    x = drop(out_BSH) if i + 1 < len(forwards) else out_BSH
  return x, finals


def bridge(bridges: Sequence, finals: list, decoder_layers: int) -> tuple:
  """The decoder layers' start carries: for each carry component k,
  ``tanh(bridges[k](all encoder finals' k-th parts))`` split per layer."""
  starts = []
  for k, dense in enumerate(bridges):
    x_BF = jnp.concatenate([c[k] for c in finals], axis=-1)
    starts.append(jnp.split(jnp.tanh(dense(x_BF)), decoder_layers, axis=-1))
  return tuple(tuple(s[i] for s in starts) for i in range(decoder_layers))
