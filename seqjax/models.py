"""Flax models: the teacher-forced encoder-decoder and its inference split.

``Seq2Seq`` is the tutorial's training model (encoder's final carry is the
decoder's initial carry; Dense over the output vocabulary at each step) and,
through its ``encode`` / ``decode_step`` methods, the tutorial's
``inference_encoder`` / ``inference_decoder`` pair. Call those methods with
``model.apply(params, ..., method=...)`` or the decoders of ``seqjax.decoding``.

Teacher forcing is explicit: ``__call__`` / ``decode_teacher_forced`` take the
decoder input tokens (the target shifted right behind a start token).

``RepeatVectorSeq2Seq`` is the other fixed-output-length model: the encoder's
final output repeated once per output step, no teacher forcing. It and
``RecurrentClassifier`` live in ``seqjax.simple_models``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import encoder as encoder_lib
from seqjax.decoder import Decoder, DecoderState
from seqjax.encoder import reverse_by_length  # noqa: F401 (public name)
from seqjax.recurrent import CELLS, make_recurrent
from seqjax.settings import ModelSettings  # noqa: F401 (public name)
from seqjax.simple_models import (RecurrentClassifier,  # noqa: F401
                                  RepeatVectorSeq2Seq, dense_init)

Array = jax.Array

FEEDBACKS = ("softmax", "argmax")  # what a free-running decoder is fed back


def _layer_name(base: str, i: int) -> str:
  """Layer 0 keeps the tutorial's name ("encoder"), so a one-layer model's
  parameters are the tutorial model's."""
  return base if i == 0 else f"{base}_{i}"


def check_architecture(settings: ModelSettings) -> None:
  """Raises ValueError for settings a ``Seq2Seq`` cannot be built with."""
  if settings.encoder_layers < 1 or settings.decoder_layers < 1:
    raise ValueError(f"layers must be at least 1; got encoder "
                     f"{settings.encoder_layers}, decoder "
                     f"{settings.decoder_layers}")
  if not 0.0 <= settings.dropout < 1.0:
    raise ValueError(f"dropout must be in [0, 1); got {settings.dropout}")
  if settings.attention != "none":
    attention_lib.check(settings.attention, settings.attention_score,
                        settings.units,
                        settings.units * (2 if settings.bidirectional else 1))


class Seq2Seq(nn.Module):
  """Encoder-decoder over token ids: an encoder (``seqjax.encoder``), a
  decoder (``seqjax.decoder``) and a Dense readout.

  ``ModelSettings``' defaults are the tutorial's model: one LSTM layer each
  side, the encoder's final carry the decoder's start, a Dense readout.

  Attributes:
    src_vocab: size of the source vocabulary (one-hot width in the tutorial).
    tgt_vocab: size of the target vocabulary.
    settings: the architecture (``seqjax.settings.ModelSettings``).
    dtype: the computation's dtype.

  Where the encoder's final carries and the decoder's differ in size
  (bidirectional, or other layer counts) a learned bridge maps one to the
  other: ``tanh(Dense(all encoder final carries))``.
  """

  src_vocab: int
  tgt_vocab: int
  settings: ModelSettings
  dtype: Any = jnp.float32

  def setup(self):
    check_architecture(self.settings)
    if self.settings.embedding_dim is not None:
      self.src_embed = nn.Embed(self.src_vocab, self.settings.embedding_dim,
                                name="src_embedding")
      self.tgt_embed = nn.Embed(self.tgt_vocab, self.settings.embedding_dim,
                                name="tgt_embedding")
    self._setup_encoder()
    width, units = self.settings.embedding_dim, self.settings.units
    self.decoders = [
        self._layer(f, _layer_name("decoder", i))
        for i, f in enumerate([(width or self.tgt_vocab) + self._extra_in()]
                              + [units] * (self.settings.decoder_layers - 1))]
    if self.settings.attention != "none":
      memory = units * self._directions()
      self.attention_layer = attention_lib.Attention(
          self.settings.attention, units, memory,
          self.settings.attention_score,
          name="attention")
      self.combine = self.param("combine", dense_init, (memory + units, units))
    self.readout = nn.Dense(self.tgt_vocab, kernel_init=dense_init,
                            dtype=self.dtype, name="readout")

  def _setup_encoder(self):
    units = self.settings.units
    enc_in = [self.settings.embedding_dim or self.src_vocab] + [
        units * self._directions()] * (self.settings.encoder_layers - 1)
    self.encoders = [self._layer(f, _layer_name("encoder", i))
                     for i, f in enumerate(enc_in)]
    self.backward_encoders = [
        self._layer(f, _layer_name("encoder_backward", i))
        for i, f in enumerate(enc_in)] if self.settings.bidirectional else []
    if self._needs_bridge():
      self.bridges = [nn.Dense(self.settings.decoder_layers * units,
                               dtype=self.dtype, name=f"bridge_{k}")
                      for k in range(CELLS[self.settings.cell].carry_size)]

  def _layer(self, in_features: int, name: str):
    return make_recurrent(self.settings.cell, units=self.settings.units,
                          dtype=self.dtype, in_features=in_features,
                          name=name)

  # The tutorial's names for the one-layer model's recurrences.
  @property
  def encoder(self):
    return self.encoders[0]

  @property
  def decoder(self):
    return self.decoders[0]

  def _directions(self) -> int:
    return 2 if self.settings.bidirectional else 1

  def _feeds(self) -> bool:
    return self.settings.attention == "luong" and self.settings.input_feeding

  def _stepwise(self) -> bool:
    """Does teacher forcing need a step at a time (the previous step's
    attention enters the next)?"""
    return self.settings.attention == "bahdanau" or self._feeds()

  def _extra_in(self) -> int:
    """Features the first decoder layer reads beside the token."""
    if self.settings.attention == "bahdanau":
      return self.settings.units * self._directions()
    return self.settings.units if self._feeds() else 0

  def _needs_bridge(self) -> bool:
    s = self.settings
    return s.bidirectional or s.encoder_layers != s.decoder_layers

  def _parts(self) -> Decoder:
    """The decoder's arrays (valid inside one ``apply``)."""
    attending = self.settings.attention != "none"
    return Decoder(
        layers=tuple(l.step_arrays() for l in self.decoders),
        extra_in=self._extra_in(), kind=self.settings.attention,
        feeds=self._feeds(),
        score=(self.attention_layer.score_name() if attending else ""),
        attention=self.attention_layer.arrays() if attending else None,
        combine=self.combine if attending else None, dtype=self.dtype)

  def _drop(self, x: Array) -> Array:
    """Dropout where the call has a "dropout" rng (training) and a rate."""
    rate = self.settings.dropout
    if (rate == 0.0 or not self.has_rng("dropout")
        or jnp.issubdtype(x.dtype, jnp.integer)):
      return x
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

  def _drop_scale(self, shape) -> Optional[Array]:
    """A dropout mask already scaled (keep / (1 - rate)), or None when off."""
    if self.settings.dropout == 0.0 or not self.has_rng("dropout"):
      return None
    return self._drop(jnp.ones(shape, self.dtype))

  def _src_inputs(self, tokens: Array) -> Array:
    if self.settings.embedding_dim is None:
      return tokens
    return self.src_embed(tokens)

  def _tgt_inputs(self, tokens: Array) -> Array:
    if self.settings.embedding_dim is None:
      return tokens
    return self.tgt_embed(tokens)

  def _read(self, out: Array) -> Array:
    return self.readout(out).astype(jnp.float32)

  # ------------------------------------------------------------ encoder

  def _start(self, finals: list) -> tuple:
    """The decoder layers' start carries from the encoder's final ones."""
    if not self._needs_bridge():
      return tuple(finals)
    return encoder_lib.bridge(self.bridges, finals,
                              self.settings.decoder_layers)

  def _layers_of(self, state) -> tuple:
    if isinstance(state, DecoderState):
      return state.rnn
    return (state,) if self.settings.decoder_layers == 1 else state

  def _plain_state(self, rnn: tuple):
    return rnn[0] if self.settings.decoder_layers == 1 else rnn

  def _encode_layers(self, src_BS: Array, src_mask_BS: Optional[Array]):
    """-> outputs (B, S, M) of the top layer, final carries per layer (a
    forward and, when bidirectional, a backward one each)."""
    return encoder_lib.encode_layers(
        self.encoders, self.backward_encoders,
        self._drop(self._src_inputs(src_BS)), src_mask_BS, self._drop)

  def encode(self, src_BS: Array, src_mask_BS: Optional[Array] = None):
    """Source tokens -> the decoder's start state: the carry (a tuple per
    layer when stacked) or, with attention, a ``DecoderState``."""
    memory_BSM, finals = self._encode_layers(src_BS, src_mask_BS)
    rnn = self._start(finals)
    if self.settings.attention == "none":
      return self._plain_state(rnn)
    mask_BS = (jnp.ones(src_BS.shape, bool) if src_mask_BS is None
               else src_mask_BS)
    return self._parts().start(rnn, memory_BSM, mask_BS, src_BS.shape[0])

  def encode_for_decoding(self, src_BS: Array,
                          src_mask_BS: Optional[Array] = None):
    """``encode``'s state, computed for inference. The one-layer plain model
    looks source rows up inside each encoder step (``Recurrent.final_carry``),
    faster for the large batches of batched decoding; others need every
    output (attention) and take ``encode``."""
    s = self.settings
    if (s.attention != "none" or s.bidirectional or s.encoder_layers > 1
        or s.decoder_layers > 1):
      return self.encode(src_BS, src_mask_BS)
    return self.encoder.final_carry(self._src_inputs(src_BS),
                                    mask=src_mask_BS)

  # ------------------------------------------------------------ decoder

  def _step(self, x: Array, state) -> tuple[Array, Any]:
    """One decoder step on the previous token's input (ids or vectors)."""
    parts = self._parts()
    xw_BG = parts.project_tokens(self._drop(x))
    drop = lambda i, v: self._drop(v)
    if self.settings.attention != "none":
      out_BH, state = parts.step(xw_BG, state, drop)
      return self._read(out_BH), state
    out_BH, rnn = parts.step(xw_BG, self._layers_of(state), drop)
    return self._read(out_BH), self._plain_state(rnn)

  def decode_step(self, token_B: Array, state) -> tuple[Array, Any]:
    """One decoder step: previous token (B,) and state -> logits (B, V),
    state."""
    return self._step(self._tgt_inputs(token_B), state)

  def decode_step_dense(self, x_BV: Array, state) -> tuple[Array, Any]:
    """One decoder step fed a distribution over the target vocabulary (B, V)
    instead of a token: a matmul with the decoder kernel (one-hot inputs), or
    the expected embedding ``x @ table`` -> logits (B, V), state."""
    if self.settings.embedding_dim is not None:
      x_BV = x_BV @ self.tgt_embed.embedding.astype(x_BV.dtype)
    return self._step(x_BV, state)

  def decode_teacher_forced(self, dec_in_BT: Array, state,
                            dec_mask_BT: Optional[Array] = None) -> Array:
    """Teacher forcing: the true previous tokens are fed -> logits (B, T, V).

    A decoder whose step reads the previous step's attention runs its step
    in a scan; the others run each layer over all steps at once (the
    projected-inputs scan of ``seqjax.recurrent``) and, with Luong
    attention, attend from all steps at once."""
    if self._stepwise():
      return self._read(self._stepwise_teacher_forced(dec_in_BT, state))
    x = self._drop(self._tgt_inputs(dec_in_BT))
    for i, (layer, carry) in enumerate(zip(self.decoders,
                                           self._layers_of(state))):
      x, _ = layer(x, initial_carry=carry, mask=dec_mask_BT)
      if i + 1 < self.settings.decoder_layers:
        x = self._drop(x)
    if self.settings.attention == "luong":  # no feeding: all steps at once
      parts = self._parts()
      x = parts.combined(parts.attend(x, state.memory)[0], x)
    return self._read(self._drop(x))

  def _stepwise_teacher_forced(self, dec_in_BT: Array, state) -> Array:
    """The outputs (B, T, H) of ``Decoder.scan``, the token inputs projected
    for all steps first."""
    parts = self._parts()
    xw_TBG = jnp.swapaxes(parts.project_tokens(
        self._drop(self._tgt_inputs(dec_in_BT))), 0, 1)
    steps, batch = xw_TBG.shape[:2]
    masks = [self._drop_scale((steps, batch, self.settings.units))
             for _ in range(self.settings.decoder_layers)]
    return jnp.swapaxes(parts.scan(xw_TBG, state, masks), 0, 1)

  def decode_free_running(self, state, start_B: Array, num_steps: int,
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

    def body(mdl, loop, _):
      state, x = loop
      if feedback == "softmax":
        logits_BV, state = mdl.decode_step_dense(x, state)
        x = jax.nn.softmax(logits_BV, axis=-1)
      else:
        logits_BV, state = mdl.decode_step(x, state)
        x = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
      return (state, x), logits_BV

    x0 = (jax.nn.one_hot(start_B, self.tgt_vocab, dtype=jnp.float32)
          if feedback == "softmax" else start_B.astype(jnp.int32))
    scan = nn.scan(body, variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True},
                   length=num_steps, out_axes=1)
    _, logits_BTV = scan(self, (state, x0), None)
    return logits_BTV

  def free_running(self, src_BS: Array, num_steps: int, start_id: int,
                   src_mask_BS: Optional[Array] = None,
                   feedback: str = "softmax") -> Array:
    """The free-running training model: source -> logits (B, num_steps, V)."""
    state = self.encode(src_BS, src_mask_BS)
    start_B = jnp.full((src_BS.shape[0],), start_id, jnp.int32)
    return self.decode_free_running(state, start_B, num_steps, feedback)

  def __call__(self, src_BS: Array, dec_in_BT: Array,
               src_mask_BS: Optional[Array] = None,
               dec_mask_BT: Optional[Array] = None) -> Array:
    """The teacher-forced training model: logits (B, T, V)."""
    state = self.encode(src_BS, src_mask_BS)
    return self.decode_teacher_forced(dec_in_BT, state, dec_mask_BT)


MODEL_CHOICES = ("encoder_decoder", "repeat_vector")


def build_seq2seq(model: str, *, src_vocab: int, tgt_vocab: int, units: int,
                  out_len: int, cell: str = "lstm",
                  dtype: Any = jnp.float32) -> nn.Module:
  """The ``--model`` choice of a fixed-output-length task.

  ``encoder_decoder``: the teacher-forced ``Seq2Seq``; ``repeat_vector``:
  ``RepeatVectorSeq2Seq`` with ``out_len`` output steps.
  """
  if model == "encoder_decoder":
    return Seq2Seq(src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                   settings=ModelSettings(units=units, cell=cell), dtype=dtype)
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
