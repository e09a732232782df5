"""The recurrent cells' steps, with fused gates (Keras semantics).

* LSTM: parameters ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H) and
  ``bias`` (4H,), gate order ``i, f, g, o`` (input, forget, candidate,
  output). The carry is the tuple ``(h, c)``, each (B, H).
* GRU: Keras' default ``reset_after=True`` variant: ``kernel`` (F, 3H),
  ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H) (input bias, recurrent
  bias), gate order ``z, r, n``; ``h' = z * h + (1 - z) * n``. The carry is
  the tuple ``(h,)``.

A step takes its input already projected (``xw``: the input times ``kernel``
plus the input bias), so only ``h @ recurrent_kernel`` is left in it.
Shape letters: B batch, T time, H units, G the gates' width (4H or 3H).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Carry = tuple  # tuple of (B, H) arrays


def project_inputs(kernel: Array, bias: Array, x: Array, dtype: Any) -> Array:
  """Input projection: row gather for token ids, matmul for dense inputs."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return (jnp.take(kernel, x, axis=0) + bias).astype(dtype)
  return (x.astype(dtype) @ kernel.astype(dtype) + bias.astype(dtype))


def lstm_cell(kernel_HG, h_BH, c_BH, xw_BG):
  """One step -> (h, c, the activations i, f, g, o, tanh(c) side by side).

  ``h_BH`` / ``c_BH`` None stand for zeros (a sequence's first step)."""
  z_BG = xw_BG if h_BH is None else xw_BG + h_BH @ kernel_HG
  i, f, g, o = lstm_gates(z_BG)
  c_new = i * g if c_BH is None else f * c_BH + i * g
  tc = jnp.tanh(c_new)
  # One array of what the backward pass needs: one stacked scan output.
  return o * tc, c_new, jnp.concatenate([i, f, g, o, tc], axis=-1)


def gru_cell(kernel_HG, bias_G, h_BH, xw_BG):
  """One step -> (h, the activations z, r, n and h @ U_n + b_n side by side).

  ``h_BH`` None stands for zeros (a sequence's first step)."""
  hu_BG = (jnp.broadcast_to(bias_G, xw_BG.shape) if h_BH is None
           else h_BH @ kernel_HG + bias_G)
  two = 2 * kernel_HG.shape[0]  # z and r side by side: one pass for both
  z, r = jnp.split(sigmoid(xw_BG[:, :two] + hu_BG[:, :two]), 2, axis=-1)
  xn, hn = xw_BG[:, two:], hu_BG[:, two:]
  n = jnp.tanh(xn + r * hn)
  h_new = (1.0 - z) * n if h_BH is None else z * h_BH + (1.0 - z) * n
  return h_new, jnp.concatenate([z, r, n, hn], axis=-1)


def lstm_update(recurrent: dict, carry: Carry, xw_BG: Array) -> Carry:
  """One LSTM step given the already projected input ``x @ W + b``."""
  h_BH, c_BH = carry
  kernel_HG = recurrent["recurrent_kernel"].astype(xw_BG.dtype)
  h_BH, c_BH, _ = lstm_cell(kernel_HG, h_BH, c_BH, xw_BG)
  return (h_BH, c_BH)


def lstm_first(recurrent: dict, xw_BG: Array) -> Carry:
  """``lstm_update`` from the zero carry: no ``h @ U`` to compute."""
  kernel_HG = recurrent["recurrent_kernel"].astype(xw_BG.dtype)
  return lstm_cell(kernel_HG, None, None, xw_BG)[:2]


def gru_first(recurrent: dict, xw_BG: Array) -> Carry:
  """``gru_update`` from the zero carry: no ``h @ U`` to compute."""
  dtype = xw_BG.dtype
  return (gru_cell(recurrent["recurrent_kernel"].astype(dtype),
                    recurrent["recurrent_bias"].astype(dtype), None,
                    xw_BG)[0],)


def gru_update(recurrent: dict, carry: Carry, xw_BG: Array) -> Carry:
  """One GRU step (reset_after=True) given the projected input ``x @ W + b_in``."""
  (h_BH,) = carry
  dtype = xw_BG.dtype
  h_BH, _ = gru_cell(recurrent["recurrent_kernel"].astype(dtype),
                      recurrent["recurrent_bias"].astype(dtype), h_BH, xw_BG)
  return (h_BH,)


# Gate nonlinearities as tanh alone: sigmoid(x) = (1 + tanh(x / 2)) / 2.
# XLA:CPU evaluates one tanh over a whole fused row far faster than
# sigmoids and tanhs over its gate slices (benchmarks/RESULTS.md).

def sigmoid(x: Array) -> Array:
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def lstm_gates(z_BG: Array) -> list[Array]:
  """i, f, g, o from the pre-activations (B, 4H): one tanh over the row."""
  units = z_BG.shape[-1] // 4
  scale_G = jnp.repeat(jnp.array([0.5, 0.5, 1.0, 0.5], z_BG.dtype), units)
  shift_G = jnp.repeat(jnp.array([0.5, 0.5, 0.0, 0.5], z_BG.dtype), units)
  return jnp.split(jnp.tanh(z_BG * scale_G) * scale_G + shift_G, 4, axis=-1)


def keep_masked(mask_B: Array, new: Carry, old: Carry) -> Carry:
  return tuple(jnp.where(mask_B[:, None], n, o) for n, o in zip(new, old))


def lengths_to_mask(lengths_B: Array, max_len: int) -> Array:
  """(B,) lengths -> (B, T) boolean mask, True on real steps."""
  return jnp.arange(max_len)[None, :] < lengths_B[:, None]
