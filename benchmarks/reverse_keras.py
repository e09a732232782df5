"""The reverse workload in Keras 3 (JAX backend): the tutorial's own model.

``define_models`` is the tutorial's: a training model on one-hot inputs
(encoder LSTM's states start the decoder LSTM, Dense softmax on top) and the
inference encoder / decoder sharing its layers. Training is ``model.fit``;
decoding calls the inference models with ``predict_on_batch`` (the lightest
of Keras' compiled inference calls) and feeds the argmax back as one-hot.
"""

from __future__ import annotations

import os

if "keras" not in __import__("sys").modules:
  # Must be set before Keras is imported; the peer runs on JAX like seqjax.
  os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402


def define_models(n_input: int, n_output: int, n_units: int):
  encoder_inputs = keras.Input(shape=(None, n_input))
  encoder = keras.layers.LSTM(n_units, return_state=True)
  _, state_h, state_c = encoder(encoder_inputs)
  encoder_states = [state_h, state_c]
  decoder_inputs = keras.Input(shape=(None, n_output))
  decoder_lstm = keras.layers.LSTM(n_units, return_sequences=True,
                                   return_state=True)
  decoder_outputs, _, _ = decoder_lstm(decoder_inputs,
                                       initial_state=encoder_states)
  decoder_dense = keras.layers.Dense(n_output, activation="softmax")
  decoder_outputs = decoder_dense(decoder_outputs)
  model = keras.Model([encoder_inputs, decoder_inputs], decoder_outputs)
  encoder_model = keras.Model(encoder_inputs, encoder_states)
  state_inputs = [keras.Input(shape=(n_units,)), keras.Input(shape=(n_units,))]
  decoder_outputs, state_h, state_c = decoder_lstm(decoder_inputs,
                                                   initial_state=state_inputs)
  decoder_outputs = decoder_dense(decoder_outputs)
  decoder_model = keras.Model([decoder_inputs] + state_inputs,
                              [decoder_outputs, state_h, state_c])
  return model, encoder_model, decoder_model


class Runner:

  def __init__(self, workload):
    if keras.backend.backend() != "jax":
      raise RuntimeError("the Keras peer needs KERAS_BACKEND=jax; Keras was "
                         f"imported with {keras.backend.backend()!r}")
    self.w = workload
    s = workload.s
    eye = np.eye(s.n_features, dtype=np.float32)
    self.eye = eye
    d = workload.train_data
    self.x1, self.x2, self.y = eye[d["src"]], eye[d["dec_in"]], eye[d["target"]]
    self.src_onehot = eye[workload.decode_sources()]
    self._build(0)
    self.notes = ["model.fit over the epoch (its train function compiled "
                  "first on one batch, untimed) after a timed first "
                  "train_on_batch; decoding with predict_on_batch"]

  def _build(self, seed: int):
    s = self.w.s
    keras.utils.set_random_seed(seed)
    self.model, self.encoder, self.decoder = define_models(
        s.n_features, s.n_features, s.units)
    self.model.compile(optimizer="adam", loss="categorical_crossentropy",
                       metrics=["accuracy"])

  def versions(self) -> dict:
    return harness.keras_versions()

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    self._build(s.seed + rep)
    out = harness.time_keras_epoch(self.model, [self.x1, self.x2], self.y,
                                   s.batch_size)
    acc = self.w.accuracy(self.decode_batched(self.w.decode_sources()))
    return {**out, "decode_accuracy": acc}

  def _decode(self, src_onehot: np.ndarray) -> np.ndarray:
    h, c = self.encoder.predict_on_batch(src_onehot)
    token = np.zeros((len(src_onehot), 1, self.w.s.n_features), np.float32)
    token[:, 0, 0] = 1.0  # the start token, id 0
    out = []
    for _ in range(self.w.s.n_steps_out):
      probs, h, c = self.decoder.predict_on_batch([token, h, c])
      ids = np.asarray(probs)[:, 0].argmax(-1)
      out.append(ids)
      token = self.eye[ids][:, None]
    return np.stack(out, 1)

  def decode_batched(self, src: np.ndarray) -> np.ndarray:
    onehot = self.eye[src]
    bs = self.w.s.decode_batch
    return np.concatenate([self._decode(onehot[i:i + bs])
                           for i in range(0, len(src), bs)])

  def decode_loop(self, src: np.ndarray) -> np.ndarray:
    onehot = self.eye[src]
    return np.concatenate([self._decode(onehot[i:i + 1])
                           for i in range(len(src))])

  def ceiling_gflops(self, n: int) -> float:
    return harness.jax_matmul_gflops(n)  # Keras runs on the same JAX
