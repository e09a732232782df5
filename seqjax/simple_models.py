"""The one-recurrence models: ``RepeatVectorSeq2Seq`` (Keras' RepeatVector
encoder-decoder) and ``RecurrentClassifier`` (a recurrent layer and a Dense
readout). ``seqjax.models`` exports both."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.cells import Carry
from seqjax.recurrent import CELLS, make_recurrent

Array = jax.Array

dense_init = nn.initializers.xavier_uniform()  # Keras' glorot_uniform


class RepeatVectorSeq2Seq(nn.Module):
  """The RepeatVector + TimeDistributed encoder-decoder (Keras ``Sequential``).

  ``LSTM(units)`` reads the source into its final output h (B, H);
  ``RepeatVector(out_len)`` feeds that same h to the decoder at every output
  step; the decoder ``LSTM(units, return_sequences=True)`` starts from a zero
  carry, as in Keras; one ``Dense(tgt_vocab)`` is applied at every step
  (``TimeDistributed``). No teacher forcing: one forward pass predicts the
  whole fixed-length output, so "decoding" is the argmax of the logits.

  Parameters are exactly Keras': encoder ``4*(units*(src_vocab+units)+units)``,
  decoder ``4*(units*(units+units)+units)``, readout ``units*tgt_vocab+tgt_vocab``
  (LSTM; ``cell="gru"`` gives Keras' reset_after GRU counts).
  """

  src_vocab: int
  tgt_vocab: int
  units: int
  out_len: int
  cell: str = "lstm"
  dtype: Any = jnp.float32

  # The shared loss and predictor call it on the source alone.
  takes_decoder_input: ClassVar[bool] = False

  def setup(self):
    self.encoder = make_recurrent(self.cell, units=self.units,
                                  in_features=self.src_vocab,
                                  dtype=self.dtype, name="encoder")
    self.decoder = make_recurrent(self.cell, units=self.units,
                                  in_features=self.units,
                                  dtype=self.dtype, name="decoder")
    self.readout = nn.Dense(self.tgt_vocab, kernel_init=dense_init,
                            dtype=self.dtype, name="readout")

  def encode(self, src_BS: Array, src_mask_BS: Optional[Array] = None) -> Array:
    """Source tokens -> the encoder's final output h (B, H), the fixed vector."""
    _, carry = self.encoder(src_BS, mask=src_mask_BS)
    return carry[0]

  def decode(self, h_BH: Array) -> Array:
    """The fixed vector -> logits (B, out_len, V)."""
    # RepeatVector: the decoder projects h once and reuses it at every step.
    h_BTH, _ = self.decoder.repeat(h_BH, self.out_len)
    return self.readout(h_BTH).astype(jnp.float32)

  def __call__(self, src_BS: Array,
               src_mask_BS: Optional[Array] = None) -> Array:
    """The whole model: logits (B, out_len, V)."""
    return self.decode(self.encode(src_BS, src_mask_BS))


class RecurrentClassifier(nn.Module):
  """A recurrent layer and a Dense readout: a class per sample or per step.

  Keras' ``LSTM(units)`` + ``Dense(num_classes, softmax)`` (the last step's
  output) or, with ``every_step``, ``LSTM(units, return_sequences=True)`` +
  ``TimeDistributed(Dense)`` (one prediction per step). Returns logits; the
  softmax is in the loss.

  ``__call__(x_BT, carry=None, mask_BT=None) -> (logits, final carry)``:
  ``x_BT`` are token ids (the row lookup of a one-hot input of width
  ``vocab``) or vectors (B, T, vocab); ``carry`` is the initial carry (None:
  zeros), so stateful use passes the previous batch's final carry; masked
  steps (mask False, e.g. missing values) leave the carry unchanged. Logits
  are (B, num_classes), or (B, T, num_classes) with ``every_step``.
  """

  vocab: int
  num_classes: int
  units: int
  cell: str = "lstm"
  every_step: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.rnn = make_recurrent(self.cell, units=self.units,
                              in_features=self.vocab, dtype=self.dtype,
                              name="rnn")
    self.readout = nn.Dense(self.num_classes, kernel_init=dense_init,
                            dtype=self.dtype, name="readout")

  def initial_carry(self, batch_size: int) -> Carry:
    """The zero carry (needs no parameters: callable on an unbound model)."""
    return tuple(jnp.zeros((batch_size, self.units), self.dtype)
                 for _ in range(CELLS[self.cell].carry_size))

  def __call__(self, x_BT: Array, carry: Optional[Carry] = None,
               mask_BT: Optional[Array] = None) -> tuple[Array, Carry]:
    h_BTH, carry = self.rnn(x_BT, initial_carry=carry, mask=mask_BT)
    # Masked steps repeat the previous output, so the last step's output is
    # the one after the last real step, wherever the padding is.
    h = h_BTH if self.every_step else h_BTH[:, -1]
    return self.readout(h).astype(jnp.float32), carry
