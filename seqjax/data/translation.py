"""The translation data pipeline: a pair file to id arrays and length buckets.

``prepare`` loads the first ``num_samples`` valid pairs (``pairs.load_pairs``)
and splits them: ``split="tail"`` holds out the last ``validation_split`` of
them as Keras does (one held-out set, ``val``, one reference a pair);
``split="random"`` is ``pairs.split_random`` (by English sentence, the
split that reported results use: ``dev`` and ``test`` sets of distinct
sentences, each with all its translations as references). Targets can be
converted to one Chinese script first (``target_script``, OpenCC). The
vocabularies come from the training split (held-out symbols never seen are
unknown; a subword side's SentencePiece model is trained on the training
split alone); both splits are encoded (targets ``"\\t" + sentence + "\\n"``)
and the training rows grouped into length buckets. What a workdir records
of them is ``seqjax.data.vocab_file``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import numpy as np

from seqjax import train as train_lib
from seqjax.data import pairs as pairs_lib
from seqjax.data import script as script_lib
from seqjax.data import subword as subword_lib
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import ParameterError
from seqjax.evaluate import HeldOut

TRAIN_KEYS = ("src", "src_mask", "dec_in", "target", "target_mask")
SPLITS = ("tail", "random")


@dataclasses.dataclass
class TranslationData:
  """Everything a run needs from the pair file."""

  pair_file: pairs_lib.PairFile
  train_pairs: list[tuple[str, str]]
  val_pairs: Optional[list[tuple[str, str]]]  # the tail split's held out
  src_vocab: Vocab
  tgt_vocab: Vocab
  train: dict[str, np.ndarray]          # all training pairs, padded to max
  buckets: list[dict[str, np.ndarray]]  # the same rows, by length bucket
  val: Optional[dict[str, np.ndarray]]  # tail: held-out pairs, padded
  max_decode_len: int
  # The held-out sets by name: tail {"val"}, random {"dev", "test"}.
  held_out: dict[str, HeldOut] = dataclasses.field(default_factory=dict)
  split: str = "tail"
  n_train_sentences: int = 0            # distinct training sources

  @property
  def selection(self) -> HeldOut:
    """The set evaluated every epoch and models are chosen on: dev (random
    split) or val (tail); never the test set."""
    return self.held_out["dev" if self.split == "random" else "val"]

  @property
  def reported(self) -> HeldOut:
    """The set whose scores are the run's result: test, or val (tail)."""
    return self.held_out["test" if self.split == "random" else "val"]

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
    """Pairs, sentences and references of each side, vocabulary sizes and
    buckets ([rows, source width, target width] each; None with one), for
    a run's results. ``n_train``: training pairs; ``n_<set>``: held-out
    sentences (tail: pairs, one reference each)."""
    counts = dict(
        data_path=self.pair_file.path, n_pairs=len(self.pair_file.pairs),
        n_train=len(self.train_pairs),
        n_train_sentences=self.n_train_sentences,
        malformed_lines=len(self.pair_file.malformed),
        src_vocab=len(self.src_vocab), tgt_vocab=len(self.tgt_vocab),
        buckets=[list(b["src"].shape) + [b["target"].shape[1]]
                 for b in self.buckets] if len(self.buckets) > 1 else None)
    for held_out in self.held_out.values():
      counts.update(held_out.counts())
    return counts

  def describe(self, malformed_note: str = "") -> str:
    """The pairs read (or the malformed lines skipped, with
    ``malformed_note``), the split, the vocabularies, widths and buckets,
    for a log."""
    pf, n_src, n_tgt = self.pair_file, len(self.src_vocab), len(self.tgt_vocab)
    if self.split == "random":
      sets = ", ".join(f"{h.name} {len(h.sources)} sentences ({h.n_references}"
                       " references)" for h in self.held_out.values())
      samples = (f"Number of samples: {len(pf.pairs)}, random split by "
                 f"English sentence: {len(self.train_pairs)} training pairs "
                 f"({self.n_train_sentences} sentences), {sets}")
    else:
      samples = (f"Number of samples: {len(pf.pairs)} ({len(self.train_pairs)}"
                 f" training, {len(self.val_pairs)} held out)")
    return "\n".join([
        pairs_lib.describe_malformed(pf, note=malformed_note)
        or f"Read {len(pf.pairs)} pairs from {pf.path}.", samples,
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
              batch_size: int, target_cost: float = 1.0,
              bucket_by: str = "target"
              ) -> list[dict[str, np.ndarray]]:
  """``train``'s rows in at most ``num_buckets`` length buckets (each at
  least a batch), each cut to its own longest source and target; the
  limits minimize the padded work (``vocab.length_buckets``)."""
  buckets = []
  for rows, src_w, tgt_w in vocab_lib.length_buckets(
      train["src_len"], train["target_len"], num_buckets, by=bucket_by,
      min_size=batch_size, target_cost=target_cost):
    bucket = {k: v[rows] for k, v in train.items()}
    for k in ("src", "src_mask"):
      bucket[k] = bucket[k][:, :src_w]
    for k in ("dec_in", "target", "target_mask"):
      bucket[k] = bucket[k][:, :tgt_w]
    buckets.append(bucket)
  return buckets


@dataclasses.dataclass(frozen=True)
class Levels:
  """How each side is split into symbols: ``source`` one of
  ``vocab.LEVELS``, ``target`` one of ``vocab.TARGET_LEVELS``; a subword
  side's SentencePiece vocabulary size (``src_vocab_size``,
  ``tgt_vocab_size``) and ``subword_model`` (unigram or bpe)."""

  source: str = "char"
  target: str = "char"
  src_vocab_size: int = 4000
  tgt_vocab_size: int = 4000
  subword_model: str = "unigram"

  def check(self) -> None:
    """Raises ParameterError naming the setting that is not one."""
    if self.source not in vocab_lib.LEVELS:
      raise ParameterError("level", self.source, "must be one of "
                           + ", ".join(vocab_lib.LEVELS))
    if self.target not in vocab_lib.TARGET_LEVELS:
      raise ParameterError("target_level", self.target, "must be one of "
                           + ", ".join(vocab_lib.TARGET_LEVELS)
                           + " (Chinese has no words)")
    if self.subword_model not in subword_lib.MODEL_TYPES:
      raise ParameterError("subword_model", self.subword_model, "must be one "
                           "of " + ", ".join(subword_lib.MODEL_TYPES))

  def settings(self) -> dict:
    """What vocab.json records of them: nothing for the character and word
    levels (as before subwords), else both levels, the model type and each
    subword side's size."""
    if "subword" not in (self.source, self.target):
      return {}
    settings = {"level": self.source, "target_level": self.target,
                "subword_model": self.subword_model}
    if self.source == "subword":
      settings["src_vocab_size"] = self.src_vocab_size
    if self.target == "subword":
      settings["tgt_vocab_size"] = self.tgt_vocab_size
    return settings


def build_vocabs(train_pairs: list, level: Union[str, Levels]
                 ) -> tuple[Vocab, Vocab]:
  """From the training pairs only: held-out symbols never seen are unknown,
  and a subword model learns nothing of a held-out sentence. ``level``:
  the source's (targets: characters), or both sides' ``Levels``. Raises
  ParameterError naming a size SentencePiece cannot train."""
  levels = level if isinstance(level, Levels) else Levels(source=level)
  levels.check()
  sides = (("src_vocab_size", levels.source, False, levels.src_vocab_size,
            [s for s, _ in train_pairs]),
           ("tgt_vocab_size", levels.target, True, levels.tgt_vocab_size,
            [t for _, t in train_pairs]))
  vocabs = []
  for param, side_level, target, size, texts in sides:
    try:
      # Chinese targets have no spaces between words: no word-start marker.
      vocabs.append(Vocab.build(texts, side_level, target=target,
                                vocab_size=size,
                                model_type=levels.subword_model,
                                word_prefix=not target))
    except ValueError as e:
      if side_level != "subword":
        raise
      raise ParameterError(param, size, str(e)) from e
  return vocabs[0], vocabs[1]


def encode_held_out(name: str, groups: list, src_vocab: Vocab,
                    tgt_vocab: Vocab) -> HeldOut:
  """A held-out set of ``groups`` ((source, [references]) each): the sources
  encoded for decoding, one loss row per (source, reference) pair."""
  held_out = HeldOut(name, [s for s, _ in groups], [list(r) for _, r in groups],
                     {}, {})
  held_out.decode_arrays = vocab_lib.encode_sources(src_vocab,
                                                    held_out.sources)
  held_out.loss_arrays = encode_pairs(src_vocab, tgt_vocab, held_out.pairs())
  return held_out


def pad_to_common_widths(sets) -> None:
  """Pads the held-out ``sets``' arrays to one source width and one target
  width, so each evaluation and decoding program compiles once for all of
  them (padding is masked: the numbers are those of the narrower arrays).
  Zeros pad: they are both PAD_ID and False."""
  sides = {"src": ("src", "src_mask"),
           "target": ("dec_in", "target", "target_mask")}
  arrays = [a for s in sets for a in (s.decode_arrays, s.loss_arrays)]
  for first, keys in sides.items():
    width = max(a[first].shape[1] for a in arrays if first in a)
    for a in arrays:
      for k in keys:
        if k in a and a[k].shape[1] < width:
          a[k] = np.pad(a[k], ((0, 0), (0, width - a[k].shape[1])))


def tail_held_out(val: dict, val_pairs: list) -> HeldOut:
  """The tail split's held-out pairs as a set: one source a pair (repeats
  kept, as Keras scores them), its target the one reference; the encoded
  pairs serve both decoding and the loss."""
  return HeldOut("val", [s for s, _ in val_pairs], [[t] for _, t in val_pairs],
                 val, val)


def prepare(path: str, *, num_samples: int, validation_split: float,
            strict: bool, level: Union[str, Levels], batch_size: int,
            num_buckets: int,
            bucket_by: str = "target",
            target_cost: Union[float, Callable[[int], float]] = 1.0,
            max_decode_len: int = 0,
            vocabs: Optional[tuple[Vocab, Vocab]] = None,
            split: str = "tail", split_seed: int = 0, num_test: int = 1000,
            num_dev: int = 500, target_script: str = script_lib.AS_IS
            ) -> TranslationData:
  """Load, convert the targets to ``target_script``, split (``split``:
  tail, by ``validation_split``; random, by ``split_seed``, ``num_test``,
  ``num_dev``: see the module docstring), vocabularies (built from the
  training split unless given; ``level``: the source's, or both sides'
  ``Levels``) and id arrays. ``num_samples`` 0: all pairs.
  ``target_cost``: a decoder step's work in encoder steps
  (``target_step_cost``), or a function of the target vocabulary's size
  giving it. ``max_decode_len`` 0: the longest target (with its end symbol)
  of the training pairs and of the held-out pairs (tail) or the dev set
  (random; the test set is not looked at). Raises ParameterError."""
  if split not in SPLITS:
    raise ParameterError("split", split, f"must be one of {', '.join(SPLITS)}")
  convert = script_lib.converter(target_script)
  pair_file = pairs_lib.load_pairs(path, num_samples or None, strict)
  pairs = [(s, convert(t)) for s, t in pair_file.pairs]
  n = len(pairs)
  if split == "random":
    sides = pairs_lib.split_random(pairs, split_seed, num_test, num_dev)
    train_pairs, val_pairs, n_train_sentences = (
        sides.train, None, sides.n_train_sources)
    detail = f"{n} pairs read from {path}, random split"
  else:
    train_pairs, val_pairs = pairs_lib.split_pairs(pairs, validation_split)
    if not train_pairs or not val_pairs:
      raise ParameterError("validation_split", validation_split, f"of {n} "
                           "pairs leaves no training or no held-out pair")
    n_train_sentences = len({s for s, _ in train_pairs})
    detail = (f"{n} pairs read from {path}, validation_split "
              f"{validation_split}")
  if batch_size > len(train_pairs):
    raise ParameterError("batch_size", batch_size, f"exceeds the "
                         f"{len(train_pairs)} training pairs ({detail})")
  src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, level)
  if callable(target_cost):
    target_cost = target_cost(len(tgt_vocab))
  train = encode_pairs(src_vocab, tgt_vocab, train_pairs)
  buckets = bucketize(train, num_buckets, batch_size, target_cost,
                      bucket_by)
  if split == "random":
    val = None
    held_out = {name: encode_held_out(name, groups, src_vocab, tgt_vocab)
                for name, groups in (("dev", sides.dev), ("test", sides.test))}
    pad_to_common_widths(held_out.values())
    bound = held_out["dev"].loss_arrays
  else:
    val = encode_pairs(src_vocab, tgt_vocab, val_pairs)
    held_out = {"val": tail_held_out(val, val_pairs)}
    bound = val
  max_decode_len = max_decode_len or int(
      max(train["target_len"].max(), bound["target_len"].max()))
  return TranslationData(pair_file, train_pairs, val_pairs, src_vocab,
                         tgt_vocab, train, buckets, val, max_decode_len,
                         held_out=held_out, split=split,
                         n_train_sentences=n_train_sentences)
