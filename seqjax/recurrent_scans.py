"""Whole recurrent sequences as one scan, with hand-written backward passes.

``lstm_sequence`` / ``gru_sequence`` compute exactly what ``cells.lstm_update``
/ ``cells.gru_update`` compute, over all steps of projected inputs (T, B, G);
the recurrent layers (``seqjax.recurrent``) train through them. Autodiff of
the scan saves and replays every step's ops and adds ``h^T @ dz`` into the
recurrent-kernel gradient inside the reverse loop, one small matmul per step;
here the forward saves the gate activations, the reverse loop carries only
the carry's gradient, and the kernel gradient is one matmul over all steps.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from seqjax.cells import Array, Carry, gru_cell, lstm_cell


def _lstm_scan(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, save):
  def body(carry, inputs):
    h_BH, c_BH = carry
    xw_BG, m_B = inputs
    h_new, c_new, acts = lstm_cell(kernel_HG, h_BH, c_BH, xw_BG)
    if m_B is not None:
      h_new = jnp.where(m_B[:, None], h_new, h_BH)
      c_new = jnp.where(m_B[:, None], c_new, c_BH)
    return (h_new, c_new), (h_new, (acts, c_new) if save else None)
  carry, (h_TBH, saved) = jax.lax.scan(body, (h_BH, c_BH), (xw_TBG, mask_TB))
  return (h_TBH, carry), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _lstm_sequence(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, zero_start):
  if zero_start:  # the carry is zeros: the first step needs no h @ U
    first = lstm_cell(kernel_HG, None, None, xw_TBG[0])[:2]
    return _first_then_rest(
        first, xw_TBG, mask_TB, lambda carry, xw_TBG, mask_TB: _lstm_scan(
            kernel_HG, xw_TBG, *carry, mask_TB, False)[0])
  return _lstm_scan(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, False)[0]


def _lstm_sequence_fwd(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, zero_start):
  # Differentiated, the first step stays in the scan: peeling it would cost
  # more compile time than it saves in a typical run.
  del zero_start
  out, saved = _lstm_scan(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, True)
  return out, (kernel_HG, h_BH, c_BH, out[0], saved, mask_TB)


def entering(first_BX: Array, after_TBX: Array) -> Array:
  """What enters each step (T, B, X): ``first``, then each step's value
  ``after`` it, but the last's."""
  return jnp.concatenate([first_BX[None], after_TBX[:-1]], axis=0)


def lstm_cell_backward(dh_BH: Array, dc_BH: Array, acts_BA: Array,
                       c_prev_BH: Array) -> tuple[Array, Array]:
  """The LSTM cell's backward pass: the gradients of its new h and c ->
  those of its pre-activations (B, 4H) and of the cell it was given."""
  i, f, g, o, tc = jnp.split(acts_BA, 5, axis=-1)
  dc_BH = dc_BH + dh_BH * o * (1.0 - tc * tc)
  dz_BG = jnp.concatenate([dc_BH * g * i * (1.0 - i),
                           dc_BH * c_prev_BH * f * (1.0 - f),
                           dc_BH * i * (1.0 - g * g),
                           dh_BH * tc * o * (1.0 - o)], axis=-1)
  return dz_BG, dc_BH * f


def _lstm_sequence_bwd(zero_start, residuals, cotangents):
  del zero_start
  kernel_HG, h0_BH, c0_BH, h_TBH, (acts_TBA, c_TBH), mask_TB = residuals
  dh_TBH, (dh_BH, dc_BH) = cotangents
  kernel_GH = kernel_HG.T
  c_prev_TBH = entering(c0_BH, c_TBH)

  def body(carry, inputs):
    dh_BH, dc_BH = carry
    dh_out_BH, acts_BA, c_prev_BH, m_B = inputs
    dh_BH = dh_BH + dh_out_BH
    if m_B is not None:  # a masked step passes the gradient straight through
      keep_h, keep_c = (jnp.where(m_B[:, None], 0.0, d) for d in (dh_BH, dc_BH))
      dh_BH, dc_BH = (jnp.where(m_B[:, None], d, 0.0) for d in (dh_BH, dc_BH))
    dz_BG, dc_prev = lstm_cell_backward(dh_BH, dc_BH, acts_BA, c_prev_BH)
    dh_prev = dz_BG @ kernel_GH
    if m_B is not None:
      dh_prev, dc_prev = dh_prev + keep_h, dc_prev + keep_c
    return (dh_prev, dc_prev), dz_BG
  (dh0_BH, dc0_BH), dz_TBG = jax.lax.scan(
      body, (dh_BH, dc_BH), (dh_TBH, acts_TBA, c_prev_TBH, mask_TB),
      reverse=True)
  h_prev_TBH = entering(h0_BH, h_TBH)
  dkernel_HG = jnp.einsum("tbh,tbg->hg", h_prev_TBH, dz_TBG)
  return dkernel_HG, dz_TBG, dh0_BH, dc0_BH, None


_lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)


def lstm_sequence(recurrent: dict, carry: Optional[Carry], xw_TBG: Array,
                  mask_TB: Optional[Array] = None) -> tuple[Array, Carry]:
  """All steps of ``lstm_update`` over projected inputs (T, B, 4H).

  Returns the outputs (T, B, H) and the final carry; masked steps (mask_TB
  False) keep the carry. ``carry`` None is the zero carry (its first step
  then skips ``h @ U`` when not differentiated). Differentiable, with the
  backward pass above.
  """
  kernel_HG = recurrent["recurrent_kernel"].astype(xw_TBG.dtype)
  zero_start = carry is None
  if zero_start:
    zeros_BH = jnp.zeros(xw_TBG.shape[1:2] + kernel_HG.shape[:1], xw_TBG.dtype)
    carry = (zeros_BH, zeros_BH)
  h_TBH, carry = _lstm_sequence(kernel_HG, xw_TBG, carry[0], carry[1],
                                mask_TB, zero_start)
  return h_TBH, carry


def _first_then_rest(first: Carry, xw_TBG, mask_TB, rest):
  """Outputs and carry of a first step from zeros (``first``, the carry it
  gives) and then ``rest(carry, xw_TBG, mask_TB)`` over the other steps."""
  if mask_TB is not None:  # a masked first step leaves the zeros
    first = tuple(jnp.where(mask_TB[0][:, None], c, 0.0) for c in first)
  if xw_TBG.shape[0] == 1:
    return first[0][None], first
  h_TBH, carry = rest(first, xw_TBG[1:],
                      None if mask_TB is None else mask_TB[1:])
  return jnp.concatenate([first[0][None], h_TBH]), carry


def _gru_scan(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, save):
  def body(h_BH, inputs):
    xw_BG, m_B = inputs
    h_new, acts = gru_cell(kernel_HG, bias_G, h_BH, xw_BG)
    if m_B is not None:
      h_new = jnp.where(m_B[:, None], h_new, h_BH)
    return h_new, (h_new, acts if save else None)
  h_BH, (h_TBH, saved) = jax.lax.scan(body, h_BH, (xw_TBG, mask_TB))
  return (h_TBH, h_BH), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru_sequence(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, zero_start):
  if zero_start:  # the carry is zeros: the first step needs no h @ U
    first = (gru_cell(kernel_HG, bias_G, None, xw_TBG[0])[0],)

    def rest(carry, xw_TBG, mask_TB):
      h_TBH, h_BH = _gru_scan(kernel_HG, bias_G, xw_TBG, carry[0], mask_TB,
                              False)[0]
      return h_TBH, (h_BH,)
    h_TBH, (h_BH,) = _first_then_rest(first, xw_TBG, mask_TB, rest)
    return h_TBH, h_BH
  return _gru_scan(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, False)[0]


def _gru_sequence_fwd(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, zero_start):
  del zero_start  # as _lstm_sequence_fwd
  out, saved = _gru_scan(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, True)
  return out, (kernel_HG, h_BH, out[0], saved, mask_TB)


def _gru_sequence_bwd(zero_start, residuals, cotangents):
  del zero_start
  kernel_HG, h0_BH, h_TBH, acts_TBA, mask_TB = residuals
  dh_TBH, dh_BH = cotangents
  kernel_GH = kernel_HG.T
  h_prev_TBH = entering(h0_BH, h_TBH)

  def body(dh_BH, inputs):
    dh_out_BH, acts_BA, h_prev_BH, m_B = inputs
    z, r, n, hn = jnp.split(acts_BA, 4, axis=-1)
    dh_BH = dh_BH + dh_out_BH
    if m_B is not None:  # a masked step passes the gradient straight through
      keep_h = jnp.where(m_B[:, None], 0.0, dh_BH)
      dh_BH = jnp.where(m_B[:, None], dh_BH, 0.0)
    dz = dh_BH * (h_prev_BH - n) * z * (1.0 - z)
    dn = dh_BH * (1.0 - z) * (1.0 - n * n)
    dr = dn * hn * r * (1.0 - r)
    dhu_BG = jnp.concatenate([dz, dr, dn * r], axis=-1)
    dh_prev = dhu_BG @ kernel_GH + dh_BH * z
    if m_B is not None:
      dh_prev = dh_prev + keep_h
    return dh_prev, (jnp.concatenate([dz, dr, dn], axis=-1), dhu_BG)
  dh0_BH, (dxw_TBG, dhu_TBG) = jax.lax.scan(
      body, dh_BH, (dh_TBH, acts_TBA, h_prev_TBH, mask_TB), reverse=True)
  dkernel_HG = jnp.einsum("tbh,tbg->hg", h_prev_TBH, dhu_TBG)
  return dkernel_HG, dhu_TBG.sum(axis=(0, 1)), dxw_TBG, dh0_BH, None


_gru_sequence.defvjp(_gru_sequence_fwd, _gru_sequence_bwd)


def gru_sequence(recurrent: dict, carry: Optional[Carry], xw_TBG: Array,
                 mask_TB: Optional[Array] = None) -> tuple[Array, Carry]:
  """All steps of ``gru_update`` over projected inputs (T, B, 3H); see
  ``lstm_sequence``."""
  dtype = xw_TBG.dtype
  kernel_HG = recurrent["recurrent_kernel"].astype(dtype)
  zero_start = carry is None
  if zero_start:
    carry = (jnp.zeros(xw_TBG.shape[1:2] + kernel_HG.shape[:1], dtype),)
  h_TBH, h_BH = _gru_sequence(kernel_HG,
                              recurrent["recurrent_bias"].astype(dtype),
                              xw_TBG, carry[0], mask_TB, zero_start)
  return h_TBH, (h_BH,)
