"""Teacher forcing of a Luong decoder with input feeding, with a hand-written
backward pass.

Autodiff of ``Decoder.scan`` replays each step in a reverse scan that adds
into the gradients of the joint kernel, the combine matrix, the keys and the
encoder outputs every step: a read-modify-write of all of them per step.
Here the reverse loop carries only the gradients of the carry (h, c and the
fed attentional state) and emits each step's pre-activation gradients; the
weight and memory gradients are then a few einsums over all steps at once
(the pattern of ``seqjax.recurrent_scans``' sequences). On the 2-core CPU host
that saved about 4% of a training step's time (benchmarks/RESULTS.md).

It serves one LSTM layer whose step multiplies the fed state and h by one
stacked kernel (``Decoder.with_joint_kernel``) with a score that is a dot
product against the keys (``dot``, ``general``, ``scaled_dot``), in float32;
``serves`` says whether a decoder is such, and ``Decoder.scan`` takes
autodiff otherwise. The forward is the step's math through the same
functions (``lstm_cell``, the score, ``masked_softmax``, the combine),
so its outputs equal the step loop's. Shapes: E the fed state's width (H),
X = E + H, G = 4H, S source steps, A the keys' width, M the memory's, C = M
+ H the combine's input.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax.cells import lstm_cell, lstm_update
from seqjax.recurrent_scans import entering, lstm_cell_backward

Array = jax.Array

# The scores served, as the factor on the query . key product.
SCALES = {"dot": lambda units: 1.0, "general": lambda units: 1.0,
          "scaled_dot": lambda units: 1.0 / math.sqrt(units)}


def serves(decoder) -> bool:
  """Whether ``run`` computes ``decoder.scan`` (a ``Decoder`` with its
  joint kernel already stacked)."""
  first = decoder.layers[0]
  return (decoder.kind == "luong" and decoder.feeds
          and len(decoder.layers) == 1 and first.update is lstm_update
          and decoder.joint_kernel is not None and decoder.score in SCALES
          and jnp.dtype(decoder.dtype) == jnp.float32)


def run(decoder, xw_TBG: Array, state, drop_TBH: Optional[Array]) -> Array:
  """``decoder.scan``'s outputs (T, B, H) for a decoder it ``serves``;
  ``drop_TBH``: the scaled dropout mask on the outputs, or None."""
  memory = state.memory.value
  (h_BH, c_BH), = state.rnn
  return _fed_scan(decoder.score, xw_TBG, h_BH, c_BH, state.feed_BH,
                   decoder.joint_kernel, decoder.combine.astype(jnp.float32),
                   memory.keys_BSA, memory.values_BSM, memory.mask_BS,
                   drop_TBH)


def _forward(score, xw_TBG, h_BH, c_BH, feed_BE, joint_XG, combine_CH,
             keys_BSA, values_BSM, mask_BS, drop_TBH, save):
  """The steps -> outputs (T, B, H) and, when ``save``, per step what the
  backward pass reads."""
  score_fn = attention_lib.SCORES[score].score

  def body(carry, inputs):
    h_BH, c_BH, feed_BE = carry
    xw_BG, drop_BH = inputs
    both_BX = jnp.concatenate([feed_BE, h_BH], axis=-1)
    h_BH, c_BH, acts_BA = lstm_cell(joint_XG, both_BX, c_BH, xw_BG)
    weights_BS = attention_lib.masked_softmax(score_fn({}, h_BH, keys_BSA),
                                              mask_BS)
    context_BM = jnp.einsum("bs,bsm->bm", weights_BS, values_BSM)
    comb_BH = jnp.tanh(jnp.concatenate([context_BM, h_BH], axis=-1)
                       @ combine_CH)
    out_BH = comb_BH if drop_BH is None else comb_BH * drop_BH
    saved = (acts_BA, h_BH, c_BH, weights_BS, context_BM, comb_BH)
    return (h_BH, c_BH, out_BH), (out_BH, saved if save else None)
  _, (out_TBH, saved) = jax.lax.scan(body, (h_BH, c_BH, feed_BE),
                                     (xw_TBG, drop_TBH))
  return out_TBH, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fed_scan(score, xw_TBG, h_BH, c_BH, feed_BE, joint_XG, combine_CH,
              keys_BSA, values_BSM, mask_BS, drop_TBH):
  return _forward(score, xw_TBG, h_BH, c_BH, feed_BE, joint_XG, combine_CH,
                  keys_BSA, values_BSM, mask_BS, drop_TBH, False)[0]


def _fed_scan_fwd(score, xw_TBG, h_BH, c_BH, feed_BE, joint_XG, combine_CH,
                  keys_BSA, values_BSM, mask_BS, drop_TBH):
  out_TBH, saved = _forward(score, xw_TBG, h_BH, c_BH, feed_BE, joint_XG,
                            combine_CH, keys_BSA, values_BSM, mask_BS,
                            drop_TBH, True)
  return out_TBH, (h_BH, c_BH, feed_BE, joint_XG, combine_CH, keys_BSA,
                   values_BSM, drop_TBH, out_TBH, saved)


def _fed_scan_bwd(score, residuals, dout_TBH):
  (h0_BH, c0_BH, feed0_BE, joint_XG, combine_CH, keys_BSA, values_BSM,
   drop_TBH, out_TBH, saved) = residuals
  acts_TBA, h_TBH, c_TBH, weights_TBS, context_TBM, comb_TBH = saved
  scale = SCALES[score](h0_BH.shape[-1])
  memory_width = values_BSM.shape[-1]
  combine_HC, joint_GX = combine_CH.T, joint_XG.T

  def body(carry, inputs):
    dh_BH, dc_BH, dfeed_BH = carry
    dout_BH, acts_BA, c_prev_BH, weights_BS, comb_BH, drop_BH = inputs
    dcomb_BH = dout_BH + dfeed_BH
    if drop_BH is not None:
      dcomb_BH = dcomb_BH * drop_BH
    dpre_BH = dcomb_BH * (1.0 - comb_BH * comb_BH)
    dcontext_BM, dh_comb_BH = jnp.split(dpre_BH @ combine_HC, [memory_width],
                                        axis=-1)
    dweights_BS = jnp.einsum("bm,bsm->bs", dcontext_BM, values_BSM)
    # Softmax backward; padded positions have zero weight, so zero gradient.
    dscores_BS = scale * weights_BS * (
        dweights_BS - (weights_BS * dweights_BS).sum(-1, keepdims=True))
    dh_BH = (dh_BH + dh_comb_BH
             + jnp.einsum("bs,bsa->ba", dscores_BS, keys_BSA))
    dz_BG, dc_prev_BH = lstm_cell_backward(dh_BH, dc_BH, acts_BA, c_prev_BH)
    dfeed_prev_BE, dh_prev_BH = jnp.split(dz_BG @ joint_GX,
                                          [feed0_BE.shape[-1]], axis=-1)
    return ((dh_prev_BH, dc_prev_BH, dfeed_prev_BE),
            (dz_BG, dpre_BH, dcontext_BM, dscores_BS))
  (dh0_BH, dc0_BH, dfeed0_BE), (dz_TBG, dpre_TBH, dcontext_TBM,
                                dscores_TBS) = jax.lax.scan(
      body, (jnp.zeros_like(h0_BH), jnp.zeros_like(c0_BH),
             jnp.zeros_like(feed0_BE)),
      (dout_TBH, acts_TBA, entering(c0_BH, c_TBH), weights_TBS, comb_TBH,
       drop_TBH), reverse=True)
  both_TBX = jnp.concatenate([entering(feed0_BE, out_TBH),
                              entering(h0_BH, h_TBH)], axis=-1)
  djoint_XG = jnp.einsum("tbx,tbg->xg", both_TBX, dz_TBG)
  dcombine_CH = jnp.einsum("tbc,tbh->ch",
                           jnp.concatenate([context_TBM, h_TBH], axis=-1),
                           dpre_TBH)
  dkeys_BSA = jnp.einsum("tbs,tbh->bsh", dscores_TBS, h_TBH)
  dvalues_BSM = jnp.einsum("tbs,tbm->bsm", weights_TBS, dcontext_TBM)
  return (dz_TBG, dh0_BH, dc0_BH, dfeed0_BE, djoint_XG, dcombine_CH,
          dkeys_BSA, dvalues_BSM, None, None)


_fed_scan.defvjp(_fed_scan_fwd, _fed_scan_bwd)
