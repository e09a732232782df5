"""Flax models: the teacher-forced encoder-decoder and its inference split.

``Seq2Seq`` is the tutorial's training model (encoder's final carry is the
decoder's initial carry; Dense over the output vocabulary at each step) and,
through its ``encode`` / ``decode_step`` methods, the tutorial's
``inference_encoder`` / ``inference_decoder`` pair. Call those methods with
``model.apply(params, ..., method=...)`` or the wrappers in ``seqjax.decode``.

Teacher forcing is explicit: ``__call__`` / ``decode_teacher_forced`` take the
decoder input tokens (the target shifted right behind a start token).

``RepeatVectorSeq2Seq`` is the other fixed-output-length model: the encoder's
final output repeated once per output step, no teacher forcing.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.recurrent import CELLS, Carry, make_recurrent

Array = jax.Array

dense_init = nn.initializers.xavier_uniform()  # Keras' glorot_uniform
FEEDBACKS = ("softmax", "argmax")  # what a free-running decoder is fed back


class Seq2Seq(nn.Module):
  """Encoder-decoder over token ids.

  Attributes:
    src_vocab: size of the source vocabulary (one-hot width in the tutorial).
    tgt_vocab: size of the target vocabulary.
    units: recurrent units of encoder and decoder.
    cell: "lstm" or "gru".
    embedding_dim: None feeds tokens as one-hot (a kernel row lookup); an int
      puts an Embedding of that width in front of encoder and decoder.
  """

  src_vocab: int
  tgt_vocab: int
  units: int
  cell: str = "lstm"
  embedding_dim: Optional[int] = None
  dtype: Any = jnp.float32

  def setup(self):
    if self.embedding_dim is not None:
      self.src_embed = nn.Embed(self.src_vocab, self.embedding_dim,
                                name="src_embedding")
      self.tgt_embed = nn.Embed(self.tgt_vocab, self.embedding_dim,
                                name="tgt_embedding")
    width = self.embedding_dim
    self.encoder = make_recurrent(self.cell, units=self.units,
                                  in_features=width or self.src_vocab,
                                  dtype=self.dtype, name="encoder")
    self.decoder = make_recurrent(self.cell, units=self.units,
                                  in_features=width or self.tgt_vocab,
                                  dtype=self.dtype, name="decoder")
    self.readout = nn.Dense(self.tgt_vocab, kernel_init=dense_init,
                            dtype=self.dtype, name="readout")

  def _src_inputs(self, tokens: Array) -> Array:
    return tokens if self.embedding_dim is None else self.src_embed(tokens)

  def _tgt_inputs(self, tokens: Array) -> Array:
    return tokens if self.embedding_dim is None else self.tgt_embed(tokens)

  def encode(self, src_BS: Array, src_mask_BS: Optional[Array] = None) -> Carry:
    """Source tokens -> the encoder's final carry (the decoder's start)."""
    _, carry = self.encoder(self._src_inputs(src_BS), mask=src_mask_BS)
    return carry

  def encode_for_decoding(self, src_BS: Array,
                          src_mask_BS: Optional[Array] = None) -> Carry:
    """``encode``'s carry, computed for inference: source rows are looked up
    inside each encoder step (``Recurrent.final_carry``), which is faster
    for the large batches of batched decoding."""
    return self.encoder.final_carry(self._src_inputs(src_BS),
                                    mask=src_mask_BS)

  def decode_step(self, token_B: Array, carry: Carry) -> tuple[Array, Carry]:
    """One decoder step: previous token (B,) and carry -> logits (B, V), carry."""
    carry, h_BH = self.decoder.step(carry, self._tgt_inputs(token_B))
    return self.readout(h_BH).astype(jnp.float32), carry

  def decode_teacher_forced(self, dec_in_BT: Array, carry: Carry,
                            dec_mask_BT: Optional[Array] = None) -> Array:
    """Teacher forcing: the true previous tokens are fed -> logits (B, T, V)."""
    h_BTH, _ = self.decoder(self._tgt_inputs(dec_in_BT), initial_carry=carry,
                            mask=dec_mask_BT)
    return self.readout(h_BTH).astype(jnp.float32)

  def decode_step_dense(self, x_BV: Array, carry: Carry
                        ) -> tuple[Array, Carry]:
    """One decoder step fed a distribution over the target vocabulary (B, V)
    instead of a token: a matmul with the decoder kernel (one-hot inputs), or
    the expected embedding ``x @ table`` -> logits (B, V), carry."""
    if self.embedding_dim is not None:
      x_BV = x_BV @ self.tgt_embed.embedding.astype(x_BV.dtype)
    carry, h_BH = self.decoder.step(carry, x_BV)
    return self.readout(h_BH).astype(jnp.float32), carry

  def decode_free_running(self, carry: Carry, start_B: Array, num_steps: int,
                          feedback: str = "softmax") -> Array:
    """The decoder fed its own previous prediction -> logits (B, num_steps, V).

    No target token enters. ``feedback="softmax"`` feeds the predicted
    distribution (as the Keras "no teacher forcing" model, whose Dense softmax
    output is the next input): it is differentiable, so the loss of later
    steps trains earlier predictions too. ``"argmax"`` feeds the predicted
    token (a row lookup, like greedy decoding); no gradient flows through it.
    """
    if feedback not in FEEDBACKS:
      raise ValueError(f"unknown feedback {feedback!r}; expected one of "
                       f"{FEEDBACKS}")

    def body(mdl, state, _):
      carry, x = state
      if feedback == "softmax":
        logits_BV, carry = mdl.decode_step_dense(x, carry)
        x = jax.nn.softmax(logits_BV, axis=-1)
      else:
        logits_BV, carry = mdl.decode_step(x, carry)
        x = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
      return (carry, x), logits_BV

    x0 = (jax.nn.one_hot(start_B, self.tgt_vocab, dtype=jnp.float32)
          if feedback == "softmax" else start_B.astype(jnp.int32))
    scan = nn.scan(body, variable_broadcast="params",
                   split_rngs={"params": False}, length=num_steps,
                   out_axes=1)
    _, logits_BTV = scan(self, (carry, x0), None)
    return logits_BTV

  def free_running(self, src_BS: Array, num_steps: int, start_id: int,
                   src_mask_BS: Optional[Array] = None,
                   feedback: str = "softmax") -> Array:
    """The free-running training model: source -> logits (B, num_steps, V)."""
    carry = self.encode(src_BS, src_mask_BS)
    start_B = jnp.full((src_BS.shape[0],), start_id, jnp.int32)
    return self.decode_free_running(carry, start_B, num_steps, feedback)

  def __call__(self, src_BS: Array, dec_in_BT: Array,
               src_mask_BS: Optional[Array] = None,
               dec_mask_BT: Optional[Array] = None) -> Array:
    """The teacher-forced training model: logits (B, T, V)."""
    carry = self.encode(src_BS, src_mask_BS)
    return self.decode_teacher_forced(dec_in_BT, carry, dec_mask_BT)


MODEL_CHOICES = ("encoder_decoder", "repeat_vector")


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


def build_seq2seq(model: str, *, src_vocab: int, tgt_vocab: int, units: int,
                  out_len: int, cell: str = "lstm",
                  dtype: Any = jnp.float32) -> nn.Module:
  """The ``--model`` choice of a fixed-output-length task.

  ``encoder_decoder``: the teacher-forced ``Seq2Seq``; ``repeat_vector``:
  ``RepeatVectorSeq2Seq`` with ``out_len`` output steps.
  """
  if model == "encoder_decoder":
    return Seq2Seq(src_vocab=src_vocab, tgt_vocab=tgt_vocab, units=units,
                   cell=cell, dtype=dtype)
  if model == "repeat_vector":
    return RepeatVectorSeq2Seq(src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                               units=units, out_len=out_len, cell=cell,
                               dtype=dtype)
  raise ValueError(f"unknown model {model!r}; expected one of {MODEL_CHOICES}")


def init_inputs(model: nn.Module, batch: dict) -> tuple:
  """``model.init``'s example inputs from a batch: the first row of ``src``,
  and of ``dec_in`` for a model that takes a decoder input."""
  if getattr(model, "takes_decoder_input", True):
    return batch["src"][:1], batch["dec_in"][:1]
  return (batch["src"][:1],)


def init_params(model: nn.Module, rng: Array, src_BS: Array,
                dec_in_BT: Optional[Array] = None):
  """``model.init`` with the inputs the model takes (no ``dec_in`` for a
  model that is not teacher-forced)."""
  if getattr(model, "takes_decoder_input", True):
    return model.init(rng, src_BS, dec_in_BT)
  return model.init(rng, src_BS)


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
