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

from typing import Any, Callable, ClassVar, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.cells import (Array, Carry, gru_first, gru_update, keep_masked,
                          lstm_first, lstm_update, project_inputs)
from seqjax.recurrent_scans import gru_sequence, lstm_sequence


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
        carry = keep_masked(mask_TB[0], carry, zeros)
      ids_TB = ids_TB[1:]
      mask_TB = None if mask_TB is None else mask_TB[1:]
    else:
      carry = tuple(c.astype(self.dtype) for c in initial_carry)

    def body(carry, inputs):
      ids_B, m_B = inputs
      new = update(recurrent, carry, project(ids_B))
      return (new if m_B is None else keep_masked(m_B, new, carry)), None
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
