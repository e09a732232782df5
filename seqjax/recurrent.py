"""Recurrent cells with fused gates and a scan-compiled recurrent layer.

Conventions (Keras semantics, so counts and behaviour match the tutorials):

* ``LSTM``: parameters ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H) and
  ``bias`` (4H,), gate order ``i, f, g, o`` (input, forget, candidate,
  output). The carry is the tuple ``(h, c)``, each (B, H). The forget-gate
  bias starts at 1 (Keras ``unit_forget_bias``).
* ``GRU``: Keras' default ``reset_after=True`` variant: ``kernel`` (F, 3H),
  ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H) (input bias, recurrent
  bias), gate order ``z, r, n``; ``h' = z * h + (1 - z) * n``. The carry is
  the tuple ``(h,)``.

Inputs are either integer token ids (B, T) -- a one-hot input times the kernel
is a row lookup, so the layer gathers kernel rows and never builds the
one-hot -- or dense vectors (B, T, F), which are multiplied by the kernel.
Either way the input projection of all timesteps is one op before the scan,
leaving only ``h @ recurrent_kernel`` inside it (in training); inference's
``final_carry`` looks token rows up inside each step instead.

A mask (B, T) (True = real step) makes padded steps leave the carry, and the
emitted output, unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Carry = tuple  # tuple of (B, H) arrays


def project_inputs(kernel: Array, bias: Array, x: Array, dtype: Any) -> Array:
  """Input projection: row gather for token ids, matmul for dense inputs."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return (jnp.take(kernel, x, axis=0) + bias).astype(dtype)
  return (x.astype(dtype) @ kernel.astype(dtype) + bias.astype(dtype))


def lstm_update(recurrent: dict, carry: Carry, xw_BG: Array) -> Carry:
  """One LSTM step given the already projected input ``x @ W + b``."""
  h_BH, c_BH = carry
  kernel_HG = recurrent["recurrent_kernel"].astype(xw_BG.dtype)
  h_BH, c_BH, _ = _lstm_cell(kernel_HG, h_BH, c_BH, xw_BG)
  return (h_BH, c_BH)


def lstm_first(recurrent: dict, xw_BG: Array) -> Carry:
  """``lstm_update`` from the zero carry: no ``h @ U`` to compute."""
  kernel_HG = recurrent["recurrent_kernel"].astype(xw_BG.dtype)
  return _lstm_cell(kernel_HG, None, None, xw_BG)[:2]


def gru_first(recurrent: dict, xw_BG: Array) -> Carry:
  """``gru_update`` from the zero carry: no ``h @ U`` to compute."""
  dtype = xw_BG.dtype
  return (_gru_cell(recurrent["recurrent_kernel"].astype(dtype),
                    recurrent["recurrent_bias"].astype(dtype), None,
                    xw_BG)[0],)


def gru_update(recurrent: dict, carry: Carry, xw_BG: Array) -> Carry:
  """One GRU step (reset_after=True) given the projected input ``x @ W + b_in``."""
  (h_BH,) = carry
  dtype = xw_BG.dtype
  h_BH, _ = _gru_cell(recurrent["recurrent_kernel"].astype(dtype),
                      recurrent["recurrent_bias"].astype(dtype), h_BH, xw_BG)
  return (h_BH,)


# Gate nonlinearities as tanh alone: sigmoid(x) = (1 + tanh(x / 2)) / 2.
# XLA:CPU evaluates one tanh over a whole fused row far faster than
# sigmoids and tanhs over its gate slices (benchmarks/RESULTS.md).

def _sigmoid(x: Array) -> Array:
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _lstm_gates(z_BG: Array) -> list[Array]:
  """i, f, g, o from the pre-activations (B, 4H): one tanh over the row."""
  units = z_BG.shape[-1] // 4
  scale_G = jnp.repeat(jnp.array([0.5, 0.5, 1.0, 0.5], z_BG.dtype), units)
  shift_G = jnp.repeat(jnp.array([0.5, 0.5, 0.0, 0.5], z_BG.dtype), units)
  return jnp.split(jnp.tanh(z_BG * scale_G) * scale_G + shift_G, 4, axis=-1)


def _keep_masked(mask_B: Array, new: Carry, old: Carry) -> Carry:
  return tuple(jnp.where(mask_B[:, None], n, o) for n, o in zip(new, old))


def lengths_to_mask(lengths_B: Array, max_len: int) -> Array:
  """(B,) lengths -> (B, T) boolean mask, True on real steps."""
  return jnp.arange(max_len)[None, :] < lengths_B[:, None]


# Whole-sequence recurrences with hand-written backward passes. Autodiff of
# the scan saves and replays every step's ops and adds ``h^T @ dz`` into the
# recurrent-kernel gradient inside the reverse loop, one small matmul per step;
# here the forward saves the gate activations, the reverse loop carries only
# the carry's gradient, and the kernel gradient is one matmul over all steps.
# The forward computes exactly what ``lstm_update`` / ``gru_update`` compute.

def _lstm_cell(kernel_HG, h_BH, c_BH, xw_BG):
  """One step -> (h, c, the activations i, f, g, o, tanh(c) side by side).

  ``h_BH`` / ``c_BH`` None stand for zeros (a sequence's first step)."""
  z_BG = xw_BG if h_BH is None else xw_BG + h_BH @ kernel_HG
  i, f, g, o = _lstm_gates(z_BG)
  c_new = i * g if c_BH is None else f * c_BH + i * g
  tc = jnp.tanh(c_new)
  # One array of what the backward pass needs: one stacked scan output.
  return o * tc, c_new, jnp.concatenate([i, f, g, o, tc], axis=-1)


def _lstm_scan(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, save):
  def body(carry, inputs):
    h_BH, c_BH = carry
    xw_BG, m_B = inputs
    h_new, c_new, acts = _lstm_cell(kernel_HG, h_BH, c_BH, xw_BG)
    if m_B is not None:
      h_new = jnp.where(m_B[:, None], h_new, h_BH)
      c_new = jnp.where(m_B[:, None], c_new, c_BH)
    return (h_new, c_new), (h_new, (acts, c_new) if save else None)
  carry, (h_TBH, saved) = jax.lax.scan(body, (h_BH, c_BH), (xw_TBG, mask_TB))
  return (h_TBH, carry), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _lstm_sequence(kernel_HG, xw_TBG, h_BH, c_BH, mask_TB, zero_start):
  if zero_start:  # the carry is zeros: the first step needs no h @ U
    first = _lstm_cell(kernel_HG, None, None, xw_TBG[0])[:2]
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


def _gru_cell(kernel_HG, bias_G, h_BH, xw_BG):
  """One step -> (h, the activations z, r, n and h @ U_n + b_n side by side).

  ``h_BH`` None stands for zeros (a sequence's first step)."""
  hu_BG = (jnp.broadcast_to(bias_G, xw_BG.shape) if h_BH is None
           else h_BH @ kernel_HG + bias_G)
  two = 2 * kernel_HG.shape[0]  # z and r side by side: one pass for both
  z, r = jnp.split(_sigmoid(xw_BG[:, :two] + hu_BG[:, :two]), 2, axis=-1)
  xn, hn = xw_BG[:, two:], hu_BG[:, two:]
  n = jnp.tanh(xn + r * hn)
  h_new = (1.0 - z) * n if h_BH is None else z * h_BH + (1.0 - z) * n
  return h_new, jnp.concatenate([z, r, n, hn], axis=-1)


def _gru_scan(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, save):
  def body(h_BH, inputs):
    xw_BG, m_B = inputs
    h_new, acts = _gru_cell(kernel_HG, bias_G, h_BH, xw_BG)
    if m_B is not None:
      h_new = jnp.where(m_B[:, None], h_new, h_BH)
    return h_new, (h_new, acts if save else None)
  h_BH, (h_TBH, saved) = jax.lax.scan(body, h_BH, (xw_TBG, mask_TB))
  return (h_TBH, h_BH), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru_sequence(kernel_HG, bias_G, xw_TBG, h_BH, mask_TB, zero_start):
  if zero_start:  # the carry is zeros: the first step needs no h @ U
    first = (_gru_cell(kernel_HG, bias_G, None, xw_TBG[0])[0],)

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


class StepArrays(NamedTuple):
  """One recurrent layer's step: ``update(recurrent, carry, xw)`` on the
  input projected by ``kernel`` and ``bias``.

  ``stacks_inputs``: the step's pre-activations are ``xw + h @ U`` (LSTM),
  so more input rows stacked above ``U``, with their inputs beside ``h`` in
  the carry, are the same step with one matmul for both (GRU's reset gate
  scales only ``h @ U_n``: no)."""
  update: Callable[[dict, Carry, Array], Carry]
  recurrent: dict
  kernel: Array
  bias: Array
  stacks_inputs: bool = False


class Recurrent(nn.Module):
  """Base of the recurrent layers: parameters, projection, step and scan.

  Subclasses set ``num_gates``, ``carry_size``, ``update``, ``first``,
  ``sequence`` and ``_make_bias``.
  """

  units: int
  in_features: int
  dtype: Any = jnp.float32         # computation dtype
  param_dtype: Any = jnp.float32   # parameters stay float32 by default

  num_gates: ClassVar[int]
  carry_size: ClassVar[int]
  stacks_inputs: ClassVar[bool] = False  # see ``StepArrays``
  update: ClassVar[Callable[[dict, Carry, Array], Carry]]
  # ``update`` from the zero carry, without the recurrent matmul.
  first: ClassVar[Callable[[dict, Array], Carry]]
  # All steps at once with a hand-written backward pass (``lstm_sequence``).
  sequence: ClassVar[Callable]

  def setup(self):
    gh = self.num_gates * self.units
    self.kernel = self.param("kernel", nn.initializers.xavier_uniform(),
                             (self.in_features, gh), self.param_dtype)
    self.recurrent_kernel = self.param(
        "recurrent_kernel", nn.initializers.orthogonal(),  # as Keras
        (self.units, gh), self.param_dtype)
    self._make_bias()

  def _make_bias(self):
    raise NotImplementedError

  def _input_bias(self) -> Array:
    raise NotImplementedError

  def _recurrent_params(self) -> dict:
    return {"recurrent_kernel": self.recurrent_kernel}

  def input_bias(self) -> Array:
    """The bias added to the projected input ``x @ kernel``."""
    return self._input_bias()

  def recurrent_params(self) -> dict:
    """What ``update`` reads beside the carry and the projected input."""
    return self._recurrent_params()

  def step_arrays(self) -> "StepArrays":
    """The layer as plain arrays and its update, for a pure step function
    (a scan body calls no module)."""
    return StepArrays(type(self).update, self._recurrent_params(),
                      self.kernel, self._input_bias(), self.stacks_inputs)

  def initial_carry(self, batch_size: int) -> Carry:
    return tuple(jnp.zeros((batch_size, self.units), self.dtype)
                 for _ in range(self.carry_size))

  def project(self, x: Array) -> Array:
    """Token ids (...,) or vectors (..., F) -> projected inputs (..., G*H)."""
    return project_inputs(self.kernel, self._input_bias(), x, self.dtype)

  def step(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
    """One step on one timestep of input (token ids (B,) or vectors (B, F))."""
    carry = type(self).update(self._recurrent_params(), carry, self.project(x))
    return carry, carry[0]

  def __call__(self, x: Array, initial_carry: Optional[Carry] = None,
               mask: Optional[Array] = None) -> tuple[Array, Carry]:
    """Runs over ``x`` (B, T) ids or (B, T, F) vectors.

    Returns the outputs (B, T, H) and the final carry. Masked steps (mask
    False) keep the previous carry and repeat the previous output.
    """
    batch_size = x.shape[0]
    carry = self.initial_carry(batch_size) if initial_carry is None else tuple(
        c.astype(self.dtype) for c in initial_carry)
    xw_TBG = jnp.swapaxes(self.project(x), 0, 1)
    mask_TB = None if mask is None else jnp.swapaxes(mask.astype(bool), 0, 1)
    # Plain arrays and a pure function: no module calls inside the scan. A
    # carry of None is the zero carry, whose first step skips h @ U.
    h_TBH, carry = type(self).sequence(
        self._recurrent_params(), None if initial_carry is None else carry,
        xw_TBG, mask_TB)
    return jnp.swapaxes(h_TBH, 0, 1), carry

  def final_carry(self, x: Array, initial_carry: Optional[Carry] = None,
                  mask: Optional[Array] = None) -> Carry:
    """The final carry of ``self(x, initial_carry, mask)``, for inference.

    Token ids are looked up inside each step instead of projected for all
    timesteps first: with a large batch (decoding thousands of sentences)
    the hoisted (T, B, G*H) projection is memory traffic, not work; nor are
    the outputs stacked. Dense inputs take the hoisted path. Differentiable
    by autodiff (training uses ``__call__``, which is faster there).
    """
    if not jnp.issubdtype(x.dtype, jnp.integer):
      return self(x, initial_carry, mask)[1]
    kernel, bias = self.kernel, self._input_bias()
    recurrent = self._recurrent_params()
    update = type(self).update
    ids_TB = jnp.swapaxes(x, 0, 1)
    mask_TB = None if mask is None else jnp.swapaxes(mask.astype(bool), 0, 1)
    project = lambda ids_B: project_inputs(kernel, bias, ids_B, self.dtype)
    if initial_carry is None:  # from zeros, the first step needs no h @ U
      zeros = self.initial_carry(x.shape[0])
      carry = type(self).first(recurrent, project(ids_TB[0]))
      if mask_TB is not None:
        carry = _keep_masked(mask_TB[0], carry, zeros)
      ids_TB = ids_TB[1:]
      mask_TB = None if mask_TB is None else mask_TB[1:]
    else:
      carry = tuple(c.astype(self.dtype) for c in initial_carry)

    def body(carry, inputs):
      ids_B, m_B = inputs
      new = update(recurrent, carry, project(ids_B))
      return (new if m_B is None else _keep_masked(m_B, new, carry)), None
    carry, _ = jax.lax.scan(body, carry, (ids_TB, mask_TB))
    return carry

  def repeat(self, x: Array, length: int,
             initial_carry: Optional[Carry] = None) -> tuple[Array, Carry]:
    """Runs ``length`` steps on the same input (Keras' RepeatVector in front).

    ``x`` is token ids (B,) or vectors (B, F). Equal to ``self(x repeated
    length times)``, but the input is projected once, not once per step.
    Returns the outputs (B, length, H) and the final carry.
    """
    batch_size = x.shape[0]
    carry = self.initial_carry(batch_size) if initial_carry is None else tuple(
        c.astype(self.dtype) for c in initial_carry)
    xw_BG = self.project(x)
    recurrent = self._recurrent_params()
    update = type(self).update

    def body(carry, _):
      carry = update(recurrent, carry, xw_BG)
      return carry, carry[0]
    carry, h_TBH = jax.lax.scan(body, carry, None, length=length)
    return jnp.swapaxes(h_TBH, 0, 1), carry


class LSTM(Recurrent):
  """LSTM layer, four gates fused into one matmul (see module docstring)."""

  num_gates: ClassVar[int] = 4
  carry_size: ClassVar[int] = 2
  stacks_inputs: ClassVar[bool] = True
  update: ClassVar = staticmethod(lstm_update)
  first: ClassVar = staticmethod(lstm_first)
  sequence: ClassVar = staticmethod(lstm_sequence)

  def _make_bias(self):
    units = self.units

    def unit_forget_bias(key, shape, dtype=jnp.float32):
      del key
      return jnp.zeros(shape, dtype).at[units:2 * units].set(1.0)
    self.bias = self.param("bias", unit_forget_bias, (4 * units,),
                           self.param_dtype)

  def _input_bias(self):
    return self.bias


class GRU(Recurrent):
  """GRU layer (Keras reset_after=True), three gates fused into one matmul."""

  num_gates: ClassVar[int] = 3
  carry_size: ClassVar[int] = 1
  update: ClassVar = staticmethod(gru_update)
  first: ClassVar = staticmethod(gru_first)
  sequence: ClassVar = staticmethod(gru_sequence)

  def _make_bias(self):
    self.bias = self.param("bias", nn.initializers.zeros_init(),
                           (2, 3 * self.units), self.param_dtype)

  def _input_bias(self):
    return self.bias[0]

  def _recurrent_params(self):
    return {"recurrent_kernel": self.recurrent_kernel,
            "recurrent_bias": self.bias[1]}


CELLS = {"lstm": LSTM, "gru": GRU}


def make_recurrent(cell: str, **kwargs) -> Recurrent:
  if cell not in CELLS:
    raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS)}")
  return CELLS[cell](**kwargs)
