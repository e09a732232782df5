"""The attention workload: training throughput of the attention translator.

The model of issue 14's attention target (and of the PyTorch NMT toolkit it
is measured against there): character-level English -> Chinese characters,
embeddings 128, a bidirectional LSTM encoder of 256 units per direction
(padding masked), a bridge ``tanh(Dense)`` from its final carries to the
decoder's, an LSTM decoder of 256 units with Luong "general" attention and
input feeding, dropout 0.2, label smoothing 0.1, Adam 2e-3, batch 64. Every
architecture setting is a field of ``Settings``, so the same workload
measures other configurations (``cell``, ``units``, ``embedding_dim``,
``bidirectional``, ``attention``, ``attention_score``, ``input_feeding``).

The data are the translate workload's: the first 10,000 pairs of
``cmn.txt`` (``--data_path``, else ``$SEQJAX_CMN_PATH``, else
``../shared/data/cmn-eng/cmn.txt``), the last 20% held out; the vocabularies
come from the training split and the training rows are grouped into 4
length buckets, as ``experiments.translate`` does (``bucket_by``: by target
length, or by source and target as the attention recipes). Both frameworks train on
the very same batches in the same order (``BucketPlan.epoch``): the same
data shapes, so the ratio is one of equal work. seqjax's step compiles once
per bucket shape, all before its first step; eager PyTorch compiles nothing.

Only training is measured (no decoding numbers: the table shows "-" there).
Each runner's ``checks`` hold its parameter count and the loss of its fresh
model on the epoch's first batch (dropout on): printed side by side as a
check that both frameworks build the same model.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import numpy as np

from seqjax import train as train_lib
from seqjax.data import pairs as pairs_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError, SeqjaxError

from benchmarks import harness

NAME = "attention"
PEERS = {"torch": "benchmarks.attention_torch"}


@dataclasses.dataclass
class Settings:
  data_path: str = ""         # empty: $SEQJAX_CMN_PATH, else ../shared/...
  num_samples: int = 10_000   # the first N pairs of the file
  validation_split: float = 0.2
  cell: str = "lstm"          # lstm or gru
  units: int = 256            # encoder (each direction) and decoder
  embedding_dim: int = 128
  bidirectional: bool = True
  attention: str = "luong"    # none, bahdanau or luong
  attention_score: str = "general"  # Luong's: dot or general
  input_feeding: bool = True  # Luong's
  dropout: float = 0.2
  label_smoothing: float = 0.1
  learning_rate: float = 2e-3  # Adam
  batch_size: int = 64
  num_buckets: int = 4
  # "both" cuts the buckets by each pair's source and target work, as the
  # attention recipes train (configs/translate_attention_*.flags); here it
  # pads the decoder more than it saves in the encoder: 5% more executed
  # matmul FLOPs than "target" (executed_flops_per_sample).
  bucket_by: str = "target"
  # 0: the whole training split; else its first N pairs (cmn.txt is sorted
  # by length: the shortest ones).
  train_samples: int = 0
  ceiling_n: int = 2048
  seed: int = 0


def _gates(cell: str) -> int:
  return 4 if cell == "lstm" else 3


def memory_features(s: Settings) -> int:
  """The encoder's output width: what attention attends to."""
  return s.units * (2 if s.bidirectional else 1)


def _feeds(s: Settings) -> bool:
  return s.attention == "luong" and s.input_feeding


def _extra_decoder_inputs(s: Settings) -> int:
  """Features the decoder reads beside the token embedding."""
  if s.attention == "bahdanau":
    return memory_features(s)
  return s.units if _feeds(s) else 0


def train_flops_per_sample(pairs, s: Settings, n_output: int) -> float:
  """Useful training FLOPs of the average pair (2 per multiply-add, forward
  x 3 for forward + backward), over its real (unpadded) steps: source steps
  ``len(source)``, target steps ``len(target) + 1`` (its ``\\n``).

  Per source step: each direction's input and recurrent matmuls, and (a
  ``general`` or Bahdanau score) the memory's key projection. Per target
  step: the decoder's input matmul (embedding and fed state or context) and
  recurrent matmul, the readout; with attention its score and context over
  the source steps (Bahdanau: twice, with its query projection; the
  attentional state is computed from the new state in every kind) and the
  ``tanh(W_c [context; h])`` combination. Embedding lookups, the bridge and
  elementwise work are not counted; nor is padding.
  """
  h, e, m = s.units, s.embedding_dim, memory_features(s)
  gh = _gates(s.cell) * h
  dirs = 2 if s.bidirectional else 1
  src = np.array([len(a) for a, _ in pairs], np.float64)
  tgt = np.array([len(b) + 1 for _, b in pairs], np.float64)
  per_src = dirs * (2 * e * gh + 2 * h * gh)
  per_tgt = 2 * (e + _extra_decoder_inputs(s)) * gh + 2 * h * gh + (
      2 * h * n_output)
  per_src_tgt = 0.0  # work per (target step, source step) pair
  if s.attention != "none":
    score = m if (s.attention == "luong" and s.attention_score == "dot") else h
    per_src += 0 if score == m else 2 * m * h
    per_tgt += 2 * (m + h) * h
    attends = 2 if s.attention == "bahdanau" else 1
    per_tgt += attends * (2 * h * h if s.attention == "bahdanau" else 0)
    per_src_tgt = attends * (2 * score + 2 * m)
  return 3.0 * float(np.mean(src * per_src + tgt * per_tgt
                             + src * tgt * per_src_tgt))


def extra_torch_parameters(s: Settings) -> int:
  """What ``nn.LSTM`` / ``nn.LSTMCell`` hold beyond seqjax: a second bias
  (4 x units) per recurrence (encoder forward, backward, decoder); PyTorch's
  GRU and seqjax's (reset_after) both keep two."""
  if s.cell != "lstm":
    return 0
  return (2 if s.bidirectional else 1) * 4 * s.units + 4 * s.units


TARGETS = [("train_samples_per_s", ("torch",), 3.0, False)]
FIRST_STEP_MAX_S = float("inf")  # the issue asks for it reported, no target


class Workload:
  name = NAME
  targets = TARGETS
  first_step_max_s = FIRST_STEP_MAX_S
  measures_decoding = False  # training throughput only
  loop_n = 0

  def __init__(self, settings: Settings):
    from experiments import translate  # the path resolution, flag names
    self.s = s = settings
    self._check(s)
    path = translate.resolve_data_path(s.data_path)
    try:
      pair_file = pairs_lib.load_pairs(path, s.num_samples or None)
    except ParameterError as e:
      raise translate.flag_error(e) from e
    train_pairs, _ = pairs_lib.split_pairs(pair_file.pairs,
                                           s.validation_split)
    # Vocabularies from the whole training split, as the experiment builds
    # them (a smaller train_samples keeps the readout's width).
    self.src_vocab, self.tgt_vocab = data_lib.build_vocabs(train_pairs,
                                                           "char")
    self.train_pairs = train_pairs[:s.train_samples or None]
    if len(self.train_pairs) < s.batch_size:
      raise SeqjaxError(f"{path}: {len(self.train_pairs)} training pairs are "
                        f"too few for batch {s.batch_size}")
    train = data_lib.encode_pairs(self.src_vocab, self.tgt_vocab,
                                  self.train_pairs)
    self.buckets = [data_lib.fit_arrays(b) for b in data_lib.bucketize(
        train, s.num_buckets, s.batch_size, data_lib.target_step_cost(
            s.cell, s.units, len(self.tgt_vocab)), s.bucket_by)]
    # Both frameworks draw their batches from this plan (a one-bucket plan
    # is fit's plain shuffle in another order: equal work all the same).
    self.plan = train_lib.BucketPlan(
        sizes=tuple(len(b["src"]) for b in self.buckets),
        batch_size=s.batch_size, group=train_lib.FitConfig.steps_per_call)
    self.train_flops_per_sample = train_flops_per_sample(
        self.train_pairs, s, len(self.tgt_vocab))
    self.ceiling_n = s.ceiling_n

  @staticmethod
  def _check(s: Settings) -> None:
    from seqjax import attention as attention_lib
    if s.cell not in ("lstm", "gru"):
      raise ParameterError("cell", s.cell, "must be lstm or gru")
    if s.bucket_by not in vocab_lib.BUCKET_BY:
      raise ParameterError("bucket_by", s.bucket_by,
                           f"must be one of {vocab_lib.BUCKET_BY}")
    if s.attention not in attention_lib.KINDS:
      raise ParameterError("attention", s.attention,
                           f"must be one of {attention_lib.KINDS}")
    if s.attention == "luong":
      attention_lib.check(s.attention, s.attention_score, s.units,
                          memory_features(s))

  def epoch_order(self, rep: int) -> tuple[np.ndarray, np.ndarray]:
    """A repetition's batches: (bucket of each step (S,), rows (S, B))."""
    dataset_S, rows = self.plan.epoch(self.s.seed + rep, 0)
    return dataset_S, rows.reshape(len(dataset_S), self.s.batch_size)

  def first_batch(self) -> dict:
    """Repetition 0's first batch: what the init-loss check is taken on."""
    dataset_S, rows_SB = self.epoch_order(0)
    return {k: v[rows_SB[0]] for k, v in self.buckets[dataset_S[0]].items()}

  def frameworks(self) -> dict[str, str]:
    return {"seqjax": __name__, **PEERS}

  def decode_sources(self) -> np.ndarray:
    return np.array([], dtype=object)  # nothing is decoded

  def compare_checks(self, results: dict) -> list[str]:
    """Lines comparing the frameworks' parameter counts and init losses."""
    checks = {fw: r.get("checks") for fw, r in results.items()
              if r.get("checks")}
    ours = checks.get("seqjax")
    if not ours:
      return []
    lines = []
    for fw, theirs in checks.items():
      if fw == "seqjax":
        continue
      extra = extra_torch_parameters(self.s) if fw == "torch" else 0
      diff = theirs["parameters"] - ours["parameters"]
      lines.append(
          f"parameters: seqjax {ours['parameters']:,}, {fw} "
          f"{theirs['parameters']:,} (difference {diff:+,}; expected "
          f"{extra:+,}: nn.LSTM's second bias): "
          f"{'match' if diff == extra else 'MISMATCH'}")
      lines.append(f"loss of the fresh model on the first batch (dropout "
                   f"on): seqjax {ours['init_loss']:.4f}, {fw} "
                   f"{theirs['init_loss']:.4f}")
    return lines

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    module = importlib.import_module(PEERS[framework])
    return module.Runner(self)


class SeqjaxRunner:
  """seqjax as ``experiments.translate`` trains the attention model:
  ``Seq2Seq`` with the workload's architecture, ``make_seq2seq_loss`` with
  label smoothing and dropout, Adam, the buckets and their ``BucketPlan``,
  ``train.fit``'s several steps per jitted call."""

  def __init__(self, workload: Workload):
    import jax
    from seqjax.models import ModelSettings, Seq2Seq
    self.w = w = workload
    s = w.s
    settings = ModelSettings(
        units=s.units, cell=s.cell, embedding_dim=s.embedding_dim,
        bidirectional=s.bidirectional, attention=s.attention,
        attention_score=s.attention_score, input_feeding=s.input_feeding,
        dropout=s.dropout)
    self.model = Seq2Seq(src_vocab=len(w.src_vocab),
                         tgt_vocab=len(w.tgt_vocab), settings=settings)
    self.init = jax.jit(self.model.init)
    self.loss_fn = train_lib.make_seq2seq_loss(
        self.model, label_smoothing=s.label_smoothing,
        dropout_seed=s.seed if s.dropout else None)
    self.notes = [
        f"{len(w.buckets)} length buckets (source x target width: " +
        ", ".join(f"{b['src'].shape[1]}x{b['target'].shape[1]}"
                  for b in w.buckets) +
        "): the step compiles once per bucket, all before the first step; "
        "first_step_s: those compiles, then one step "
        "(harness.time_jax_first_update)"]

  def _fresh_params(self, seed: int):
    import jax
    b = self.w.buckets[0]
    return self.init(jax.random.key(seed), b["src"][:1], b["dec_in"][:1])

  @functools.cached_property
  def checks(self) -> dict:
    """Parameters and the fresh model's loss on the first batch (its first
    step's, dropout masks included)."""
    import jax
    params = self._fresh_params(self.w.s.seed)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    step = 0 if self.loss_fn.takes_step else None  # the first step's masks
    loss, _ = self.loss_fn(params, self.w.first_batch(), step)
    return {"parameters": n, "init_loss": float(loss)}

  @functools.cached_property
  def executed_flops_per_sample(self) -> float:
    """Matmul FLOPs the training step runs (forward and backward, padded
    steps included: ``harness.jaxpr_matmul_flops``) per sample, over
    repetition 0's epoch of bucket shapes."""
    import jax
    params = self._fresh_params(self.w.s.seed)
    grad = jax.grad(lambda p, batch: self.loss_fn(p, batch, 0)[0])
    b = self.w.s.batch_size
    per_bucket = [harness.jaxpr_matmul_flops(
        grad, params, {k: v[:b] for k, v in bucket.items()})
        for bucket in self.w.buckets]
    dataset_S, _ = self.w.epoch_order(0)
    return float(np.mean([per_bucket[d] for d in dataset_S])) / b

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    _, stats, out = harness.fit_epoch(
        self.model, self._fresh_params(s.seed + rep), self.loss_fn,
        self.w.buckets, s.batch_size, s.seed + rep,
        ("adam", s.learning_rate), self.w.plan)
    return {**out, "train_shapes": len(self.w.buckets),
            "executed_flops_per_sample": self.executed_flops_per_sample,
            # The epoch's mean training loss (fit's epoch-end row).
            "train_loss": float(stats.last_metrics.get("loss", np.nan))}

  def ceiling_gflops(self, n: int) -> float:
    return harness.jax_matmul_gflops(n)
