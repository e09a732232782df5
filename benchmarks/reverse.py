"""The reverse workload: the encoder-decoder tutorial's defaults.

51 one-hot features, source 6 -> target 3 (the first three reversed), LSTM
128 encoder and decoder, Dense softmax, batch 32, Adam, one epoch over
100,000 sequences; greedy decoding of 10,000 fresh sequences. Every framework
trains on the same arrays (the peers on their one-hot form, as the tutorial).
"""

from __future__ import annotations

import dataclasses
import importlib

import jax
import numpy as np

from seqjax import metrics
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.models import ModelSettings, Seq2Seq

from benchmarks import harness

NAME = "reverse"
PEERS = {"keras": "benchmarks.reverse_keras", "torch": "benchmarks.reverse_torch"}


@dataclasses.dataclass
class Settings:
  n_features: int = 51
  n_steps_in: int = 6
  n_steps_out: int = 3
  units: int = 128
  batch_size: int = 32
  train_samples: int = 100_000
  decode_n: int = 10_000
  decode_batch: int = 1000
  loop_n: int = 200
  ceiling_n: int = 2048
  seed: int = 0


def train_flops_per_sample(s: Settings) -> float:
  """Useful training FLOPs of one sequence: the matmuls a one-hot-free model
  must do (recurrent kernels and the readout), forward x 3 (the backward pass
  is two matmuls per forward one). One-hot input matmuls are not counted:
  they are row lookups."""
  g = 4 * s.units
  recurrent = 2 * s.units * g
  readout = 2 * s.units * s.n_features
  forward = (s.n_steps_in + s.n_steps_out) * recurrent + s.n_steps_out * readout
  return 3.0 * forward


# (metric, peers compared with, at least this ratio, lower is better)
TARGETS = [("train_samples_per_s", ("keras", "torch"), 2.0, False),
           ("decode_batched_seq_per_s", ("keras", "torch"), 1.5, False),
           ("decode_loop_seq_per_s", ("torch",), 2.0, False)]
FIRST_STEP_MAX_S = 1.0


class Workload:
  name = NAME
  targets = TARGETS
  first_step_max_s = FIRST_STEP_MAX_S

  def __init__(self, settings: Settings):
    self.s = settings
    s = settings
    self.train_data = reverse_data.generate(
        np.random.default_rng([s.seed, 0]), s.train_samples, s.n_steps_in,
        s.n_steps_out, s.n_features)
    self.test_data = reverse_data.generate(
        np.random.default_rng([s.seed, 1]), s.decode_n, s.n_steps_in,
        s.n_steps_out, s.n_features)
    self.train_flops_per_sample = train_flops_per_sample(s)
    self.loop_n = min(s.loop_n, s.decode_n)
    self.ceiling_n = s.ceiling_n

  def frameworks(self) -> dict[str, str]:
    return {"seqjax": __name__, **PEERS}

  def decode_sources(self) -> np.ndarray:
    return self.test_data["src"]

  def accuracy(self, tokens: np.ndarray) -> float:
    target = self.test_data["target"][:len(tokens)]
    return float(metrics.exact_sequence_accuracy(np.asarray(tokens), target))

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    module = importlib.import_module(PEERS[framework])
    return module.Runner(self)


class SeqjaxRunner:
  """seqjax as its users run it: ``train.fit`` (several steps per jitted
  call over device-resident data), ``make_greedy_decoder`` for a batch and,
  one sequence at a time, the same jitted decoder on a batch of one."""

  def __init__(self, workload: Workload):
    self.w = workload
    s = workload.s
    self.model = Seq2Seq(src_vocab=s.n_features, tgt_vocab=s.n_features,
                         settings=ModelSettings(units=s.units))
    data = workload.train_data
    self.init = jax.jit(self.model.init)
    self.params = self.init(jax.random.key(s.seed), data["src"][:1],
                            data["dec_in"][:1])
    self.loss_fn = train_lib.make_seq2seq_loss(self.model)
    self.decoder, self.in_batches = harness.library_decoder(
        self.model, "greedy", max_len=s.n_steps_out,
        start_id=reverse_data.START_ID)
    self.encode, self.decode_step = harness.library_decoder(self.model,
                                                            "inference")
    self.notes = [
        "first_step_s: fit's jitted call compiled, then run for one step "
        "(harness.time_jax_first_update); fit reuses it",
        "decode_loop: the jitted greedy decoder on a batch of one per "
        "sequence; decode_loop_split: the tutorial's split (jitted encode, "
        "then a Python loop of jitted decode_step calls)"]

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    # A fresh model and a fresh jitted step: its compile is measured.
    params = self.init(jax.random.key(s.seed + rep),
                       self.w.train_data["src"][:1],
                       self.w.train_data["dec_in"][:1])
    state, _, out = harness.fit_epoch(self.model, params, self.loss_fn,
                                      self.w.train_data, s.batch_size,
                                      s.seed + rep)
    self.params = state.params
    acc = self.w.accuracy(self.decode_batched(self.w.decode_sources()))
    return {**out, "decode_accuracy": acc}

  def decode_batched(self, src: np.ndarray) -> np.ndarray:
    return self.in_batches(self.params, src, self.w.s.decode_batch)

  def decode_loop(self, src: np.ndarray) -> np.ndarray:
    # The recommended way to decode one sequence: the whole greedy loop is
    # one compiled call (one dispatch per sequence).
    return np.stack([np.asarray(self.decoder(self.params, src[i:i + 1]))[0]
                     for i in range(len(src))])

  def decode_loop_split(self, src: np.ndarray) -> np.ndarray:
    # The tutorial's shape: inference encoder once, then the inference
    # decoder step by step, the argmax fed back from the host.
    out = []
    for i in range(len(src)):
      carry = self.encode(self.params, src[i:i + 1])
      token = np.full((1,), reverse_data.START_ID, np.int32)
      seq = []
      for _ in range(self.w.s.n_steps_out):
        probs, carry = self.decode_step(self.params, token, carry)
        token = np.asarray(probs).argmax(-1).astype(np.int32)
        seq.append(int(token[0]))
      out.append(seq)
    return np.asarray(out)

  def extra_decoders(self) -> dict:
    return {"decode_loop_split": self.decode_loop_split}

  def ceiling_gflops(self, n: int) -> float:
    return harness.jax_matmul_gflops(n)
