"""The translate workload in Keras 3 (JAX backend): the ``lstm_seq2seq``
example's model, data arrays and greedy loop (``benchmarks.peers.
keras_translate``). Training is ``model.fit`` on the example's one-hot arrays
after a timed first ``train_on_batch`` (fit's own train function is compiled
on one batch first, untimed: samples/s excludes compiles, as for every
framework); decoding calls the inference models with ``predict_on_batch``
(the lightest of Keras' compiled calls).
"""

from __future__ import annotations

import os

if "keras" not in __import__("sys").modules:
  # Must be set before Keras is imported; the peer runs on JAX like seqjax.
  os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.peers import keras_translate as kt  # noqa: E402


class Runner:

  def __init__(self, workload):
    if keras.backend.backend() != "jax":
      raise RuntimeError("the Keras peer needs KERAS_BACKEND=jax; Keras was "
                         f"imported with {keras.backend.backend()!r}")
    self.w = workload
    # The example's character sets and lengths: over all the pairs.
    self.tables = kt.char_tables(workload.all_pairs, workload.all_pairs)
    pairs = workload.train_pairs
    self.enc_in = kt.one_hot_inputs(self.tables, [s for s, _ in pairs])
    self.dec_in, self.dec_target = kt.one_hot_targets(
        self.tables, [t for _, t in pairs])
    self._build(0)
    self.notes = [
        f"{len(self.tables.input_chars)} input / "
        f"{len(self.tables.target_chars)} output characters (the space pads "
        f"and is one), every sentence padded to {self.tables.max_encoder_len}"
        f" / {self.tables.max_decoder_len} steps",
        "model.fit over the epoch (its train function compiled first on one "
        "batch, untimed) after a timed first train_on_batch; decoding with "
        "predict_on_batch"]

  def _build(self, seed: int):
    keras.utils.set_random_seed(seed)
    self.model, self.encoder, self.decoder = kt.build_models(
        len(self.tables.input_chars), len(self.tables.target_chars),
        self.w.s.latent_dim)

  def versions(self) -> dict:
    return harness.keras_versions()

  def train_epoch(self, rep: int) -> dict:
    self._build(self.w.s.seed + rep)
    out = harness.time_keras_epoch(self.model, [self.enc_in, self.dec_in],
                                   self.dec_target, self.w.s.batch_size)
    texts = self.decode_batched(self.w.decode_sources())
    return {**out, **self.w.decode_quality(texts)}

  def _decode(self, src, batch_size: int) -> list[str]:
    return kt.greedy_decode(self.encoder, self.decoder, self.tables,
                            kt.one_hot_inputs(self.tables, list(src)),
                            batch_size=batch_size,
                            max_steps=self.w.max_decode_len, on_batch=True,
                            early_stop=self.w.s.decode_early_stop)

  def decode_batched(self, src) -> list[str]:
    return self._decode(src, self.w.s.decode_batch)

  def decode_loop(self, src) -> list[str]:
    return self._decode(src, 1)

  def ceiling_gflops(self, n: int) -> float:
    return harness.jax_matmul_gflops(n)  # Keras runs on the same JAX
