"""The translation data pipeline: a pair file to id arrays and length buckets.

``prepare`` loads the first ``num_samples`` valid pairs (``pairs.load_pairs``),
holds out the last ``validation_split`` of them as Keras does, builds the
vocabularies from the training split (held-out symbols never seen are
unknown), encodes both splits (targets ``"\\t" + sentence + "\\n"``) and groups
the training rows into length buckets. ``vocab.json`` in a workdir records the
vocabularies a model was trained with (``VocabFile``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional, Union

import numpy as np

from seqjax import reliability
from seqjax import train as train_lib
from seqjax.data import pairs as pairs_lib
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import ParameterError, SeqjaxError

VOCAB_FILE = "vocab.json"
TRAIN_KEYS = ("src", "src_mask", "dec_in", "target", "target_mask")


@dataclasses.dataclass
class TranslationData:
  """Everything a run needs from the pair file."""

  pair_file: pairs_lib.PairFile
  train_pairs: list[tuple[str, str]]
  val_pairs: list[tuple[str, str]]
  src_vocab: Vocab
  tgt_vocab: Vocab
  train: dict[str, np.ndarray]          # all training pairs, padded to max
  buckets: list[dict[str, np.ndarray]]  # the same rows, by length bucket
  val: dict[str, np.ndarray]            # held-out pairs, padded to max
  max_decode_len: int

  def fit_data(self, batch_size: int, group: int = 1):
    """-> (data, batch_plan) for ``train.fit``: the padded arrays and no plan
    with one bucket, else the buckets and a ``BucketPlan`` over them."""
    if len(self.buckets) == 1:
      return fit_arrays(self.train), None
    plan = train_lib.BucketPlan(
        sizes=tuple(len(b["src"]) for b in self.buckets),
        batch_size=batch_size, group=group)
    return [fit_arrays(b) for b in self.buckets], plan

  def counts(self) -> dict:
    """Pairs, vocabulary sizes and buckets ([rows, source width, target
    width] each; None with one), for a run's results."""
    return dict(
        data_path=self.pair_file.path, n_pairs=len(self.pair_file.pairs),
        n_train=len(self.train_pairs), n_val=len(self.val_pairs),
        malformed_lines=len(self.pair_file.malformed),
        src_vocab=len(self.src_vocab), tgt_vocab=len(self.tgt_vocab),
        val_unknown_source_symbols=int(self.val["src_unknown"].sum()),
        buckets=[list(b["src"].shape) + [b["target"].shape[1]]
                 for b in self.buckets] if len(self.buckets) > 1 else None)

  def describe(self, malformed_note: str = "") -> str:
    """The pairs read (or the malformed lines skipped, with
    ``malformed_note``), the vocabularies, widths and buckets, for a log."""
    pf, n_src, n_tgt = self.pair_file, len(self.src_vocab), len(self.tgt_vocab)
    return "\n".join([
        pairs_lib.describe_malformed(pf, note=malformed_note)
        or f"Read {len(pf.pairs)} pairs from {pf.path}.",
        f"Number of samples: {len(pf.pairs)} ({len(self.train_pairs)} "
        f"training, {len(self.val_pairs)} held out)",
        f"Number of unique input tokens: {n_src - 2} (+ padding, unknown)",
        f"Number of unique output tokens: {n_tgt - 2} (with \\t, \\n; + "
        "padding, unknown)",
        f"Max sequence length for inputs: {self.train['src'].shape[1]}",
        f"Max sequence length for outputs: {self.train['target'].shape[1]}",
        "Length buckets (pairs, source x target width): " + ", ".join(
            f"{len(b['src'])} {b['src'].shape[1]}x{b['target'].shape[1]}"
            for b in self.buckets)])


def fit_arrays(arrays: dict) -> dict:
  """The arrays a training or evaluation step reads (no lengths, counts)."""
  return {k: arrays[k] for k in TRAIN_KEYS}


def encode_pairs(src_vocab: Vocab, tgt_vocab: Vocab, pairs_: list,
                 src_width=None, tgt_width=None) -> dict[str, np.ndarray]:
  return {**vocab_lib.encode_sources(src_vocab, [s for s, _ in pairs_],
                                     src_width),
          **vocab_lib.encode_targets(tgt_vocab, [t for _, t in pairs_],
                                     tgt_width)}


def target_step_cost(cell: str, units: int, tgt_vocab_size: int) -> float:
  """A decoder step's work relative to an encoder step's: both run the
  recurrent matmul (gates x units^2), the decoder also the readout (units x
  vocabulary); inputs are row lookups."""
  gates = 4 if cell == "lstm" else 3
  return 1.0 + tgt_vocab_size / (gates * units)


def bucketize(train: dict[str, np.ndarray], num_buckets: int,
              batch_size: int, target_cost: float = 1.0
              ) -> list[dict[str, np.ndarray]]:
  """``train``'s rows in at most ``num_buckets`` length buckets (each at
  least a batch), each cut to its own longest source and target; the
  limits minimize the padded work (``vocab.length_buckets``)."""
  buckets = []
  for rows, src_w, tgt_w in vocab_lib.length_buckets(
      train["src_len"], train["target_len"], num_buckets,
      min_size=batch_size, target_cost=target_cost):
    bucket = {k: v[rows] for k, v in train.items()}
    for k in ("src", "src_mask"):
      bucket[k] = bucket[k][:, :src_w]
    for k in ("dec_in", "target", "target_mask"):
      bucket[k] = bucket[k][:, :tgt_w]
    buckets.append(bucket)
  return buckets


def build_vocabs(train_pairs: list, level: str) -> tuple[Vocab, Vocab]:
  """From the training pairs only: held-out symbols never seen are unknown."""
  return (Vocab.build([s for s, _ in train_pairs], level),
          Vocab.build([t for _, t in train_pairs], "char", target=True))


def prepare(path: str, *, num_samples: int, validation_split: float,
            strict: bool, level: str, batch_size: int, num_buckets: int,
            target_cost: Union[float, Callable[[int], float]] = 1.0,
            max_decode_len: int = 0,
            vocabs: Optional[tuple[Vocab, Vocab]] = None) -> TranslationData:
  """Load, split, vocabularies (built from the training split unless given)
  and id arrays. ``num_samples`` 0: all pairs. ``target_cost``: a decoder
  step's work in encoder steps (``target_step_cost``), or a function of the
  target vocabulary's size giving it. ``max_decode_len`` 0: the longest
  target (with its end symbol) of both splits. Raises ParameterError."""
  pair_file = pairs_lib.load_pairs(path, num_samples or None, strict)
  train_pairs, val_pairs = pairs_lib.split_pairs(pair_file.pairs,
                                                 validation_split)
  n = len(pair_file.pairs)
  if not train_pairs or not val_pairs:
    raise ParameterError("validation_split", validation_split, f"of {n} "
                         "pairs leaves no training or no held-out pair")
  if batch_size > len(train_pairs):
    raise ParameterError("batch_size", batch_size, f"exceeds the "
                         f"{len(train_pairs)} training pairs ({n} pairs read "
                         f"from {path}, validation_split {validation_split})")
  src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, level)
  if callable(target_cost):
    target_cost = target_cost(len(tgt_vocab))
  train = encode_pairs(src_vocab, tgt_vocab, train_pairs)
  buckets = bucketize(train, num_buckets, batch_size, target_cost)
  val = encode_pairs(src_vocab, tgt_vocab, val_pairs)
  max_decode_len = max_decode_len or int(
      max(train["target_len"].max(), val["target_len"].max()))
  return TranslationData(pair_file, train_pairs, val_pairs, src_vocab,
                         tgt_vocab, train, buckets, val, max_decode_len)


# -------------------------------------------------------------- vocab.json


@dataclasses.dataclass
class VocabFile:
  """What ``vocab.json`` records beside a trained model."""

  source: Vocab
  target: Vocab
  max_decode_len: int
  # The longest training source in tokens: inference truncates longer
  # sentences. None in a file written before it was recorded.
  max_source_len: Optional[int] = None


def save_vocab_file(workdir: str, vocab_file: VocabFile) -> None:
  """Writes ``<workdir>/vocab.json`` atomically (a write cut short leaves
  the old file whole)."""
  saved = {"source": vocab_file.source.to_dict(),
           "target": vocab_file.target.to_dict(),
           "max_decode_len": int(vocab_file.max_decode_len)}
  if vocab_file.max_source_len is not None:
    saved["max_source_len"] = int(vocab_file.max_source_len)
  reliability.write_atomic(os.path.join(workdir, VOCAB_FILE), json.dumps(
      saved, indent=2, ensure_ascii=False) + "\n")


def load_vocab_file(workdir: str) -> Optional[VocabFile]:
  """``<workdir>/vocab.json``, None when there is none; a file that is not
  one raises SeqjaxError naming it."""
  path = os.path.join(workdir, VOCAB_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    max_src = saved.get("max_source_len")
    return VocabFile(Vocab.from_dict(saved["source"]),
                     Vocab.from_dict(saved["target"]),
                     int(saved["max_decode_len"]),
                     int(max_src) if max_src else None)
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise SeqjaxError(f"{path} is not a vocabulary file of a translation "
                      f"model: {e}") from e
