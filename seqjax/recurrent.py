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
leaving only ``h @ recurrent_kernel`` inside it.

A mask (B, T) (True = real step) makes padded steps leave the carry, and the
emitted output, unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

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
  z_BG = xw_BG + h_BH @ recurrent["recurrent_kernel"].astype(xw_BG.dtype)
  i, f, g, o = _lstm_gates(z_BG)
  c_BH = f * c_BH + i * g
  h_BH = o * jnp.tanh(c_BH)
  return (h_BH, c_BH)


def gru_update(recurrent: dict, carry: Carry, xw_BG: Array) -> Carry:
  """One GRU step (reset_after=True) given the projected input ``x @ W + b_in``."""
  (h_BH,) = carry
  hu_BG = (h_BH @ recurrent["recurrent_kernel"].astype(xw_BG.dtype)
           + recurrent["recurrent_bias"].astype(xw_BG.dtype))
  two = 2 * h_BH.shape[-1]  # z and r side by side: one pass for both
  z, r = jnp.split(_sigmoid(xw_BG[:, :two] + hu_BG[:, :two]), 2, axis=-1)
  xn, hn = xw_BG[:, two:], hu_BG[:, two:]
  n = jnp.tanh(xn + r * hn)
  return (z * h_BH + (1.0 - z) * n,)


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


class Recurrent(nn.Module):
  """Base of the recurrent layers: parameters, projection, step and scan.

  Subclasses set ``num_gates``, ``carry_size``, ``update`` and ``_bias_init``.
  """

  units: int
  in_features: int
  dtype: Any = jnp.float32         # computation dtype
  param_dtype: Any = jnp.float32   # parameters stay float32 by default

  num_gates: ClassVar[int]
  carry_size: ClassVar[int]
  update: ClassVar[Callable[[dict, Carry, Array], Carry]]

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
    # Plain arrays and a pure function inside the scan: no module calls there.
    recurrent = self._recurrent_params()
    update = type(self).update

    if mask is None:
      def body(carry, xw_BG):
        carry = update(recurrent, carry, xw_BG)
        return carry, carry[0]
      carry, h_TBH = jax.lax.scan(body, carry, xw_TBG)
    else:
      mask_TB = jnp.swapaxes(mask.astype(bool), 0, 1)

      def body(carry, inputs):
        xw_BG, m_B = inputs
        carry = _keep_masked(m_B, update(recurrent, carry, xw_BG), carry)
        return carry, carry[0]
      carry, h_TBH = jax.lax.scan(body, carry, (xw_TBG, mask_TB))
    return jnp.swapaxes(h_TBH, 0, 1), carry


class LSTM(Recurrent):
  """LSTM layer, four gates fused into one matmul (see module docstring)."""

  num_gates: ClassVar[int] = 4
  carry_size: ClassVar[int] = 2
  update: ClassVar = staticmethod(lstm_update)

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
