"""The translate workload: the Keras ``lstm_seq2seq`` example's defaults.

The first 10,000 pairs of ``cmn.txt`` (``--data_path``, else
``$SEQJAX_CMN_PATH``, else ``../shared/data/cmn-eng/cmn.txt``), the last 20%
held out as Keras' ``validation_split=0.2`` does; the example's character
sets over all 10,000 pairs (72 input, 2,511 output characters with ``\\t``
and ``\\n``); LSTM 256 encoder and decoder, softmax readout, batch 64,
RMSprop; one epoch over the 8,000 training pairs; greedy decoding of the
first 1,000 held-out sentences, each ending at its ``\\n``. Every batch runs
the same number of decoding steps in every framework (the longest target
plus its ``\\n``): stopping a batch once all its sentences have ended would
make the time depend on how long each framework's one-epoch model writes
(in one run: Keras' model never ended a sentence, PyTorch's after 5 or 6
characters, seqjax's after 9). ``decode_early_stop=True`` measures that
instead.

Each framework runs the model its users would write. The peers are the
example: one-hot inputs, every sentence padded to the longest (27 source, 22
target steps) and trained on its padding. seqjax gathers kernel rows instead
of multiplying one-hots, groups the pairs into 4 length buckets, each padded
to its own longest sentence, and masks the padding out of the loss; its step
compiles once per bucket shape, all before the first step.
"""

from __future__ import annotations

import dataclasses
import importlib

import jax
import numpy as np

from seqjax import evaluate
from seqjax import train as train_lib
from seqjax.data import pairs as pairs_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError, SeqjaxError
from seqjax.models import ModelSettings, Seq2Seq

from benchmarks import harness

NAME = "translate"
PEERS = {"keras": "benchmarks.translate_keras",
         "torch": "benchmarks.translate_torch"}


@dataclasses.dataclass
class Settings:
  data_path: str = ""         # empty: $SEQJAX_CMN_PATH, else ../shared/...
  num_samples: int = 10_000   # the first N pairs of the file
  validation_split: float = 0.2
  latent_dim: int = 256
  batch_size: int = 64
  num_buckets: int = 4        # seqjax's length buckets
  train_samples: int = 0      # 0: the whole training split
  decode_n: int = 1000        # held-out sentences decoded
  decode_batch: int = 1000
  loop_n: int = 20            # of them, decoded one at a time
  ceiling_n: int = 2048
  # Every batch decodes all max_decode_len steps: with an early stop, the time
  # would depend on how long each framework's one-epoch model writes.
  decode_early_stop: bool = False
  seed: int = 0


def train_flops_per_sample(train_pairs, latent_dim: int,
                           n_output_chars: int) -> float:
  """Useful training FLOPs of the average pair: the recurrent matmuls over
  its real (unpadded) source and target steps (the target and its ``\\n``)
  and the readout over its target steps, forward x 3 for forward + backward.
  Input one-hots are row lookups and not counted; nor is padding."""
  recurrent = 2 * latent_dim * 4 * latent_dim
  readout = 2 * latent_dim * n_output_chars
  src_steps = np.mean([len(s) for s, _ in train_pairs])
  tgt_steps = np.mean([len(t) + 1 for _, t in train_pairs])
  return 3.0 * float(src_steps * recurrent + tgt_steps * (recurrent + readout))


TARGETS = [("train_samples_per_s", ("keras", "torch"), 3.0, False),
           ("decode_batched_seq_per_s", ("keras", "torch"), 2.0, False)]
FIRST_STEP_MAX_S = float("inf")  # the issue sets no compile target here


class Workload:
  name = NAME
  targets = TARGETS
  first_step_max_s = FIRST_STEP_MAX_S

  def __init__(self, settings: Settings):
    from experiments import translate  # the path resolution, flag names
    self.s = s = settings
    path = translate.resolve_data_path(s.data_path)
    try:
      pair_file = pairs_lib.load_pairs(path, s.num_samples or None)
    except ParameterError as e:
      raise translate.flag_error(e) from e
    self.all_pairs = pair_file.pairs
    train_pairs, val_pairs = pairs_lib.split_pairs(self.all_pairs,
                                                   s.validation_split)
    self.train_pairs = train_pairs[:s.train_samples or None]
    self.decode_pairs = val_pairs[:s.decode_n]
    if len(self.train_pairs) < s.batch_size or not self.decode_pairs:
      raise SeqjaxError(f"{path}: {len(self.train_pairs)} training and "
                       f"{len(self.decode_pairs)} held-out pairs are too few "
                       f"for batch {s.batch_size}")
    # Greedy decoding's bound: the longest target of the pairs and its \n.
    self.max_decode_len = max(len(t) for _, t in self.all_pairs) + 1
    n_output = len({c for _, t in self.all_pairs for c in t} | {"\t", "\n"})
    self.train_flops_per_sample = train_flops_per_sample(
        self.train_pairs, s.latent_dim, n_output)
    self.loop_n = min(s.loop_n, len(self.decode_pairs))
    self.ceiling_n = s.ceiling_n

  # Measured beside seqjax: its equal-work ratio (one bucket: every pair
  # padded to the longest, as the peers train).
  variants = ("seqjax_padded",)

  def frameworks(self) -> dict[str, str]:
    return {"seqjax": __name__, "seqjax_padded": __name__, **PEERS}

  def decode_sources(self) -> np.ndarray:
    return np.array([src for src, _ in self.decode_pairs], dtype=object)

  def decode_quality(self, texts) -> dict:
    """chrF of decoded texts against their references (a sanity check that
    every framework trained and decodes alike; one epoch is little), and
    their mean length in characters: with ``decode_early_stop`` a batch
    stops once its sentences have all ended, so a model that writes longer
    sentences would decode more steps."""
    refs = [t for _, t in self.decode_pairs[:len(texts)]]
    return {"decode_chrf": evaluate.score(list(texts), refs)["chrf"],
            "decode_mean_chars": float(np.mean([len(t) for t in texts]))}

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    if framework == "seqjax_padded":
      return SeqjaxRunner(self, num_buckets=1)
    module = importlib.import_module(PEERS[framework])
    return module.Runner(self)


class SeqjaxRunner:
  """seqjax as the translate experiment runs it: token ids (kernel rows
  gathered), length buckets and a ``BucketPlan``, ``train.fit``'s several
  steps per jitted call; ``make_greedy_decoder`` (one compiled ``lax.scan``)
  for a batch, and on a batch of one per sentence."""

  def __init__(self, workload: Workload, num_buckets: int = 0):
    self.w = w = workload
    s = w.s
    num_buckets = num_buckets or s.num_buckets
    # The example's character sets: over all the pairs.
    self.src_vocab, self.tgt_vocab = data_lib.build_vocabs(w.all_pairs,
                                                           "char")
    train = data_lib.encode_pairs(self.src_vocab, self.tgt_vocab,
                                  w.train_pairs)
    self.buckets = [data_lib.fit_arrays(b) for b in data_lib.bucketize(
        train, num_buckets, s.batch_size,
        data_lib.target_step_cost("lstm", s.latent_dim, len(self.tgt_vocab)))]
    self.plan = train_lib.BucketPlan(
        sizes=tuple(len(b["src"]) for b in self.buckets),
        batch_size=s.batch_size, group=train_lib.FitConfig.steps_per_call
    ) if len(self.buckets) > 1 else None
    # One source width for decoding: one compiled shape.
    self.src_width = max(len(src) for src, _ in w.all_pairs)
    self.model = Seq2Seq(src_vocab=len(self.src_vocab),
                         tgt_vocab=len(self.tgt_vocab),
                         settings=ModelSettings(units=s.latent_dim))
    self.init = jax.jit(self.model.init)
    self.params = self._fresh_params(0)
    self.loss_fn = train_lib.make_seq2seq_loss(self.model)
    self.decoder, self.in_batches = harness.library_decoder(
        self.model, "greedy", max_len=w.max_decode_len, start_id=vocab_lib.START_ID,
        stop_id=vocab_lib.END_ID, pad_id=vocab_lib.PAD_ID,
        early_stop=s.decode_early_stop)
    self.encode, self.decode_step = harness.library_decoder(self.model,
                                                            "inference")
    self.notes = [
        f"{len(self.buckets)} length buckets (source x target width: " +
        ", ".join(f"{b['src'].shape[1]}x{b['target'].shape[1]}"
                  for b in self.buckets) +
        "): the step compiles once per bucket, all before the first step; "
        "first_step_s: those compiles, then one step "
        "(harness.time_jax_first_update)",
        "decode_loop: the jitted greedy decoder on a batch of one; "
        "decode_loop_split: the tutorial's split (jitted encode, a Python "
        "loop of jitted decode_step calls)"]

  def _fresh_params(self, seed: int):
    b = self.buckets[0]
    return self.init(jax.random.key(seed), b["src"][:1], b["dec_in"][:1])

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    state, _, out = harness.fit_epoch(
        self.model, self._fresh_params(s.seed + rep), self.loss_fn,
        self.buckets if self.plan else self.buckets[0], s.batch_size,
        s.seed + rep, ("rmsprop",), self.plan)
    self.params = state.params
    texts = self.decode_batched(self.w.decode_sources())
    return {**out, "train_shapes": len(self.buckets),
            **self.w.decode_quality(texts)}

  def _encode(self, src) -> dict:
    return vocab_lib.encode_sources(self.src_vocab, list(src), self.src_width)

  def _texts(self, tokens) -> list[str]:
    return [self.tgt_vocab.decode(row) for row in np.asarray(tokens)]

  def decode_batched(self, src) -> list[str]:
    enc = self._encode(src)
    return self._texts(self.in_batches(self.params, enc["src"],
                                       self.w.s.decode_batch, enc["src_mask"]))

  def decode_loop(self, src) -> list[str]:
    enc = self._encode(src)
    return [self._texts(self.decoder(self.params, enc["src"][i:i + 1],
                                     enc["src_mask"][i:i + 1]))[0]
            for i in range(len(src))]

  def decode_loop_split(self, src) -> list[str]:
    # The tutorial's shape: inference encoder once, then the decoder step by
    # step with the argmax fed back from the host (stopping at \n with
    # decode_early_stop).
    enc = self._encode(src)
    out = []
    for i in range(len(src)):
      carry = self.encode(self.params, enc["src"][i:i + 1],
                          enc["src_mask"][i:i + 1])
      token = np.full((1,), vocab_lib.START_ID, np.int32)
      ids = []
      for _ in range(self.w.max_decode_len):
        probs, carry = self.decode_step(self.params, token, carry)
        token = np.asarray(probs).argmax(-1).astype(np.int32)
        ids.append(int(token[0]))
        if self.w.s.decode_early_stop and ids[-1] == vocab_lib.END_ID:
          break
      out.append(self.tgt_vocab.decode(ids))
    return out

  def extra_decoders(self) -> dict:
    return {"decode_loop_split": self.decode_loop_split}

  def ceiling_gflops(self, n: int) -> float:
    return harness.jax_matmul_gflops(n)
