"""The decoder of ``seqjax.models.Seq2Seq`` as pure functions of its arrays.

``Decoder.step`` is the one decoder step: every decoding call
(``Seq2Seq.decode_step``) and the teacher forcing of a decoder whose steps
depend on the previous step's attention (Bahdanau, Luong with input
feeding: ``Decoder.scan``) run it. It returns the vector the readout reads
(B, H) and the next state; the readout stays the model's.

Per step, by attention kind:

* ``none``: the stacked layers on the token; output the top layer's h.
* ``luong``: the layers on the token (and, with input feeding, the last
  attentional state); attend from the new top h_t; output
  ``tanh(W_c [c_t; h_t])``.
* ``bahdanau``: attend from the previous top h_{t-1}; the layers on the
  token and that context c_t; output ``tanh(W_c [c_t; h_t])`` from the new
  h_t and the same context (the paper reads out from the context it fed).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import fed_decoder
from seqjax.per_beam import Shared
from seqjax.cells import project_inputs
from seqjax.recurrent import StepArrays

Array = jax.Array
# drop(i, x): dropout after layer i (i < layers - 1) or, at the last index,
# on the output before the readout.
Drop = Callable[[int, Array], Array]


def no_drop(i: int, x: Array) -> Array:
  del i
  return x


class DecoderState(NamedTuple):
  """The decoder's state between steps when it attends (a plain decoder's
  state is its recurrent carry). The memory is the same for all of a
  sentence's beams: ``Shared``, beam search neither repeats nor gathers it
  (``seqjax.per_beam``)."""
  rnn: tuple          # one carry per decoder layer
  feed_BH: Array      # the last attentional state (Luong input feeding)
  weights_BS: Array   # the last step's attention weights
  memory: Shared      # Shared(attention.Memory)


@dataclasses.dataclass(frozen=True)
class Decoder:
  """The decoder's arrays and settings.

  Attributes:
    layers: the stacked recurrent layers' ``StepArrays``.
    extra_in: features the first layer reads beside the token (the
      Bahdanau context or the fed attentional state; 0 otherwise).
    kind: "none", "bahdanau" or "luong".
    feeds: Luong's input feeding.
    score: the attention score's name (``attention.SCORES``).
    attention: the score's parameters; ``combine``: W_c (M + H, H).
    joint_kernel: None, or the first layer's extra-input rows stacked above
      its recurrent kernel (E + H, G*H) (``with_joint_kernel``).
  """
  layers: tuple
  extra_in: int
  kind: str
  feeds: bool
  score: str
  attention: Optional[dict]
  combine: Optional[Array]
  dtype: Any
  joint_kernel: Optional[Array] = None

  def with_joint_kernel(self) -> "Decoder":
    """The same decoder whose step multiplies the extra input and the
    recurrent state by one stacked kernel: one matmul a step instead of
    two, and in training one gradient accumulator. Stacked here, once per
    call: a loop over steps should take this decoder in, not stack per
    step. Itself where the first layer cannot stack (no extra input, GRU)."""
    first = self.layers[0]
    if not self.extra_in or not first.stacks_inputs:
      return self
    extra_EG = first.kernel[first.kernel.shape[0] - self.extra_in:]
    joint_XG = jnp.concatenate(
        [extra_EG, first.recurrent["recurrent_kernel"]]).astype(self.dtype)
    return dataclasses.replace(self, joint_kernel=joint_XG)

  def project_tokens(self, x: Array) -> Array:
    """The first layer's projected token input: ids (...,) or vectors
    (..., F) -> (..., G*H), the extra features not yet added."""
    first = self.layers[0]
    rows = first.kernel.shape[0] - self.extra_in
    return project_inputs(first.kernel[:rows], first.bias, x, self.dtype)

  def _layers(self, xw_BG: Array, extra: Optional[Array], rnn: tuple,
              drop: Drop) -> tuple:
    """The stacked layers' step -> their new carries."""
    rnn, x = list(rnn), None
    for i, layer in enumerate(self.layers):
      if i == 0 and extra is not None and self.joint_kernel is not None:
        rnn[i] = self._joint_update(layer, xw_BG, extra, rnn[i])
      else:
        if i == 0:
          xw = xw_BG
          if extra is not None:
            kernel = layer.kernel[layer.kernel.shape[0] - self.extra_in:]
            xw = xw + extra.astype(self.dtype) @ kernel.astype(self.dtype)
        else:
          xw = project_inputs(layer.kernel, layer.bias, x, self.dtype)
        rnn[i] = layer.update(layer.recurrent, rnn[i], xw)
      x = rnn[i][0]
      if i + 1 < len(self.layers):
        x = drop(i, x)
    return tuple(rnn)

  def _joint_update(self, layer: StepArrays, xw_BG: Array, extra_BE: Array,
                    carry: tuple) -> tuple:
    """The first layer's update with ``[extra, h] @ joint_kernel`` for
    ``extra @ W_extra + h @ U``: the extra input rides in the carry's h."""
    (h_BH, *rest) = carry
    both_BX = jnp.concatenate([extra_BE.astype(self.dtype), h_BH], axis=-1)
    recurrent = {**layer.recurrent, "recurrent_kernel": self.joint_kernel}
    return layer.update(recurrent, (both_BX, *rest), xw_BG)

  def attend(self, query_BXH: Array, memory) -> tuple[Array, Array]:
    """-> (context, weights) of queries (B, H) or (B, T, H)."""
    return attention_lib.attend(self.attention, self.score, query_BXH, memory)

  def combined(self, context: Array, h: Array) -> Array:
    """The attentional state ``tanh(W_c [c; h])``."""
    both = jnp.concatenate([context, h], axis=-1)
    return jnp.tanh(both @ self.combine.astype(both.dtype))

  def step(self, xw_BG: Array, state, drop: Drop = no_drop):
    """One step on the projected token input -> (output (B, H), state).

    ``state``: a ``DecoderState`` when attending, else the layers' carries
    (a tuple, one per layer)."""
    if self.kind == "none":
      rnn = self._layers(xw_BG, None, state, drop)
      return drop(len(self.layers) - 1, rnn[-1][0]), rnn
    if self.kind == "bahdanau":
      context, weights = self.attend(state.rnn[-1][0], state.memory)
      extra = context
    else:
      extra = state.feed_BH if self.feeds else None
    rnn = self._layers(xw_BG, extra, state.rnn, drop)
    h_BH = rnn[-1][0]
    if self.kind == "luong":
      context, weights = self.attend(h_BH, state.memory)
    out_BH = drop(len(self.layers) - 1, self.combined(context, h_BH))
    # The weights stay float32 whatever the compute dtype: a loop's carry
    # keeps its type.
    return out_BH, DecoderState(rnn, out_BH if self.feeds else state.feed_BH,
                                weights.astype(jnp.float32), state.memory)

  def scan(self, xw_TBG: Array, state: DecoderState, masks: list) -> Array:
    """Teacher forcing a step at a time over projected token inputs (T, B,
    G*H) -> outputs (T, B, H). ``masks``: per layer index, a scaled
    dropout mask (T, B, H) or None. The decoders ``fed_decoder`` serves
    take its hand-written backward pass; the others autodiff of the step."""
    fast = self.with_joint_kernel()
    if fed_decoder.serves(fast):  # a hand-written backward pass
      return fed_decoder.run(fast, xw_TBG, state, masks[-1])

    def body(loop, inputs):
      rnn, feed_BH = loop
      xw_BG, masks_t = inputs
      drop = lambda i, x: x if masks_t[i] is None else x * masks_t[i]
      out_BH, new = fast.step(xw_BG, state._replace(rnn=rnn, feed_BH=feed_BH),
                              drop)
      return (new.rnn, new.feed_BH), out_BH
    _, out_TBH = jax.lax.scan(body, (state.rnn, state.feed_BH),
                              (xw_TBG, masks))
    return out_TBH

  def start(self, rnn: tuple, memory_BSM: Array, mask_BS: Array,
            batch: int) -> DecoderState:
    """The attending decoder's first state from the layers' start carries
    and the encoder outputs."""
    memory = attention_lib.make_memory(self.attention, memory_BSM, mask_BS,
                                       self.score)
    width = self.combine.shape[1] if self.feeds else 0
    return DecoderState(rnn, jnp.zeros((batch, width), self.dtype),
                        jnp.zeros(mask_BS.shape, jnp.float32), Shared(memory))
