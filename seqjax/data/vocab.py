"""Vocabularies of characters or words, and padded id arrays of sentences.

As in the Keras character-level example, a target sentence is wrapped as
``"\\t" + sentence + "\\n"``: the tab starts the decoder and the newline ends
decoding. Ids 0 and 1 are padding and the unknown symbol; a target vocabulary
puts the start and end symbols at 2 and 3. Symbols are sorted, so the same
sentences always give the same ids.

Levels: "char" splits a sentence into characters (as Keras); "word" splits
English into lowercased words and punctuation marks (Chinese has no spaces:
its targets stay characters); "subword" into the pieces of a SentencePiece
model trained on the training sentences of that side (``seqjax.data.subword``:
the vocabulary's symbols are the model's pieces, decoding joins them back
into text, with no spaces added between Chinese pieces).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from seqjax.data import subword as subword_lib

PAD, UNK = "<pad>", "<unk>"
START, END = "\t", "\n"
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3
LEVELS = ("char", "word", "subword")
TARGET_LEVELS = ("char", "subword")  # Chinese has no words
UNKNOWN = "\ufffd"  # how decoding writes the unknown symbol

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str) -> list[str]:
  """Characters or words; subwords need the model (``Vocab.tokenize``)."""
  if level == "char":
    return list(text)
  if level == "word":
    return _WORD_RE.findall(text.lower())
  if level == "subword":
    raise ValueError("subword tokens come from a SentencePiece model: "
                     "Vocab.tokenize")
  raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")


class Vocab:
  """Symbols <-> ids for one side (source or target) of a pair file. A
  subword vocabulary also holds its SentencePiece ``model`` (serialized
  bytes): its symbols are the model's pieces."""

  def __init__(self, symbols: Sequence[str], level: str = "char",
               target: bool = False, model: Optional[bytes] = None):
    if level not in LEVELS:
      raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    if (model is None) != (level != "subword"):
      raise ValueError("a subword vocabulary, and only one, has a "
                       "SentencePiece model")
    specials = [PAD, UNK] + ([START, END] if target else [])
    if list(symbols[:len(specials)]) != specials:
      raise ValueError(f"a vocabulary starts with {specials}; got "
                       f"{list(symbols[:len(specials)])}")
    self.symbols = list(symbols)
    self.level = level
    self.target = target
    self.model = model
    self.ids = {s: i for i, s in enumerate(self.symbols)}
    if len(self.ids) != len(self.symbols):
      raise ValueError("a vocabulary lists a symbol twice")
    self._sp = subword_lib.processor(model) if model is not None else None

  @classmethod
  def build(cls, texts: Iterable[str], level: str = "char",
            target: bool = False, vocab_size: int = 4000,
            model_type: str = "unigram", word_prefix: bool = True
            ) -> "Vocab":
    """The sorted symbols of ``texts`` behind the special ones; subword: a
    SentencePiece model of ``texts`` (``subword.train_model``:
    ``vocab_size``, ``model_type``, ``word_prefix``) and its pieces in the
    model's order."""
    specials = [PAD, UNK] + ([START, END] if target else [])
    if level == "subword":
      model = subword_lib.train_model(list(texts), vocab_size, model_type,
                                      word_prefix)
      return cls(specials + subword_lib.pieces(model), level, target, model)
    seen = set()
    for text in texts:
      seen.update(tokenize(text, level))
    return cls(specials + sorted(seen - set(specials)), level, target)

  def __getstate__(self) -> dict:
    # A SentencePiece processor does not pickle: it is rebuilt from the model.
    return {k: v for k, v in self.__dict__.items() if k != "_sp"}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._sp = (subword_lib.processor(self.model) if self.model is not None
                else None)

  def __len__(self) -> int:
    return len(self.symbols)

  def __eq__(self, other) -> bool:
    return (isinstance(other, Vocab) and self.symbols == other.symbols
            and self.level == other.level and self.target == other.target
            and self.model == other.model)

  def tokenize(self, text: str) -> list[str]:
    """``text``'s symbols at this vocabulary's level (some may be unknown)."""
    if self._sp is not None:
      return self._sp.encode_as_pieces(text)
    return tokenize(text, self.level)

  def detokenize(self, symbols: Sequence[str]) -> str:
    """Symbols -> text: characters joined, words with spaces, subword
    pieces by SentencePiece (its word boundaries become spaces)."""
    if self._sp is not None:
      return self._sp.decode_pieces(list(symbols))
    return ("" if self.level == "char" else " ").join(symbols)

  def encode(self, text: str) -> tuple[list[int], list[str]]:
    """-> (ids, the symbols not in the vocabulary, encoded as ``UNK_ID``)."""
    ids, unknown = [], []
    for sym in self.tokenize(text):
      i = self.ids.get(sym)
      if i is None:
        unknown.append(sym)
        i = UNK_ID
      ids.append(i)
    return ids, unknown

  def decode(self, ids: Iterable[int], unknown: str = UNKNOWN) -> str:
    """Ids -> text, up to the end symbol; padding and start are dropped, the
    unknown symbol is written as ``unknown``."""
    kept = self._kept(ids)
    if self._sp is None:
      return self.detokenize([unknown if i == UNK_ID else self.symbols[i]
                              for i in kept])
    # SentencePiece writes its unknown piece as its unknown surface.
    text = self.detokenize([self._sp.id_to_piece(self._sp.unk_id())
                            if i == UNK_ID else self.symbols[i]
                            for i in kept])
    return (text if unknown == subword_lib.UNK_SURFACE
            else text.replace(subword_lib.UNK_SURFACE, unknown))

  def _kept(self, ids: Iterable[int]) -> list[int]:
    """The ids ``decode`` writes: up to the end symbol, no padding or start."""
    kept = []
    for i in map(int, ids):
      if self.target and i == END_ID:
        break
      if i != PAD_ID and not (self.target and i == START_ID):
        kept.append(i)
    return kept

  def to_dict(self) -> dict:
    """The symbols; a subword vocabulary's model is saved on its own
    (``model_sha256`` names it)."""
    d = {"level": self.level, "target": self.target, "symbols": self.symbols}
    if self.model is not None:
      d["model_sha256"] = hashlib.sha256(self.model).hexdigest()
    return d

  @classmethod
  def from_dict(cls, d: dict, model: Optional[bytes] = None) -> "Vocab":
    """``to_dict``'s vocabulary; subword: with its ``model``, which must be
    the one ``model_sha256`` names."""
    expected = d.get("model_sha256")
    if model is not None and expected != hashlib.sha256(model).hexdigest():
      raise ValueError("the SentencePiece model is not the one the "
                       "vocabulary was built with (its sha256 differs)")
    return cls(d["symbols"], d["level"], d["target"], model)

  def fingerprint(self) -> str:
    """A short hash of the symbols: checkpoints record which ids they use."""
    blob = json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def encode_sources(vocab: Vocab, texts: Sequence[str],
                   width: Optional[int] = None) -> dict[str, np.ndarray]:
  """-> {"src": (N, W) int32 ids, "src_mask": (N, W) bool,
  "src_len": (N,), "src_unknown": (N,) unknown symbols per sentence}."""
  encoded = [vocab.encode(t) for t in texts]
  lengths = np.array([len(ids) for ids, _ in encoded], np.int32)
  width = max(int(lengths.max(initial=1)), 1) if width is None else width
  src = np.full((len(texts), width), PAD_ID, np.int32)
  for row, (ids, _) in enumerate(encoded):
    src[row, :len(ids)] = ids[:width]
  return {"src": src, "src_mask": np.arange(width)[None] < lengths[:, None],
          "src_len": lengths,
          "src_unknown": np.array([len(u) for _, u in encoded], np.int32)}


def encode_targets(vocab: Vocab, texts: Sequence[str],
                   width: Optional[int] = None) -> dict[str, np.ndarray]:
  """Teacher-forcing arrays of target sentences, each ``L + 1`` steps long:
  ``dec_in`` = start + ids, ``target`` = ids + end, ``target_mask``.
  ``width`` (>= the longest L + 1) pads them all to one length."""
  if not vocab.target:
    raise ValueError("encode_targets needs a target vocabulary")
  ids = [vocab.encode(t)[0] for t in texts]
  lengths = np.array([len(i) + 1 for i in ids], np.int32)
  width = int(lengths.max(initial=1)) if width is None else width
  dec_in = np.full((len(texts), width), PAD_ID, np.int32)
  target = np.full((len(texts), width), PAD_ID, np.int32)
  for row, seq in enumerate(ids):
    seq = seq[:width - 1]
    dec_in[row, :len(seq) + 1] = [START_ID] + seq
    target[row, :len(seq) + 1] = seq + [END_ID]
  return {"dec_in": dec_in, "target": target,
          "target_mask": np.arange(width)[None] < lengths[:, None],
          "target_len": lengths}


BUCKET_BY = ("target", "both")


def length_buckets(src_len: np.ndarray, tgt_len: np.ndarray,
                   num_buckets: int, min_size: int = 1,
                   target_cost: float = 1.0, by: str = "target"
                   ) -> list[tuple[np.ndarray, int, int]]:
  """Groups examples by target length into at most ``num_buckets`` buckets.

  ``by="both"`` orders the examples by their own work (source length +
  ``target_cost`` x target length) instead of their target length, so a
  bucket's long sources are not padded into its short ones' rows.

  -> [(row indices, source width, target width)], shortest first. Each
  bucket pads to its own longest source and target, so there are at most
  ``num_buckets`` distinct shapes. The limits minimize the padded work,
  the sum over buckets of rows x (source width + ``target_cost`` x target
  width), with every bucket holding at least ``min_size`` rows (e.g. the
  batch size; fewer rows than that in all: one bucket). They are found
  exactly, by dynamic programming over the distinct target lengths.
  ``target_cost``: a target step's work relative to a source step's (a
  decoder step also runs the readout: ``1 + vocabulary / (gates x units)``).
  """
  tgt_len = np.asarray(tgt_len)
  src_len = np.asarray(src_len)
  if num_buckets < 1:
    raise ValueError(f"num_buckets must be positive; got {num_buckets}")
  if by not in BUCKET_BY:
    raise ValueError(f"unknown bucket order {by!r}; expected one of "
                     f"{BUCKET_BY}")
  key = tgt_len if by == "target" else src_len + target_cost * tgt_len
  values, inverse = np.unique(key, return_inverse=True)
  k = len(values)
  rows_v = np.bincount(inverse, minlength=k)
  src_max_v = np.zeros(k, np.int64)
  np.maximum.at(src_max_v, inverse, src_len)
  tgt_max_v = np.zeros(k, np.int64)
  np.maximum.at(tgt_max_v, inverse, tgt_len)
  rows_cum = np.concatenate([[0], np.cumsum(rows_v)])

  # work[i, j]: one bucket of the lengths values[i:j] (inf if too small).
  work = np.full((k + 1, k + 1), np.inf)
  for i in range(k):
    src_w = np.maximum.accumulate(src_max_v[i:])
    rows = rows_cum[i + 1:] - rows_cum[i]
    tgt_w = np.maximum.accumulate(tgt_max_v[i:])
    w = rows * (src_w + target_cost * tgt_w)
    work[i, i + 1:] = np.where(rows >= min_size, w, np.inf)
  # best[b, j]: least work for values[:j] in b buckets; cut: where the last
  # one starts. More buckets than distinct lengths cannot help.
  num_buckets = min(num_buckets, k)
  best = np.full((num_buckets + 1, k + 1), np.inf)
  cut = np.zeros((num_buckets + 1, k + 1), np.int64)
  best[0, 0] = 0.0
  for b in range(1, num_buckets + 1):
    for j in range(1, k + 1):
      total = best[b - 1, :j] + work[:j, j]
      cut[b, j] = int(np.argmin(total))
      best[b, j] = total[cut[b, j]]
  if np.isinf(best[1:, k]).all():  # fewer rows than min_size: one bucket
    bounds = [(0, k)]
  else:
    b = int(np.argmin(best[1:, k])) + 1
    bounds, j = [], k
    while b > 0:
      bounds.append((int(cut[b, j]), j))
      j, b = int(cut[b, j]), b - 1
    bounds.reverse()
  out = []
  for i, j in bounds:
    g = np.flatnonzero((inverse >= i) & (inverse < j))
    out.append((g, int(src_len[g].max()), int(tgt_len[g].max())))
  return out
