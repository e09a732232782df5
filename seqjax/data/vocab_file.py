"""``vocab.json``: what a workdir records beside a trained translation model.

The vocabularies it was trained with, its decoding bound, and the data it was
trained on (``data_settings``: the split, the target script, a subword side's
settings); ``spm_source.model`` / ``spm_target.model`` beside it hold a
subword side's SentencePiece model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Optional

from seqjax import reliability
from seqjax.data import script as script_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import SeqjaxError

if TYPE_CHECKING:
  from seqjax.data.translation import Levels

VOCAB_FILE = "vocab.json"
# A subword side's SentencePiece model, beside vocab.json.
MODEL_FILES = {"source": "spm_source.model", "target": "spm_target.model"}


@dataclasses.dataclass
class VocabFile:
  """What ``vocab.json`` records beside a trained model."""

  source: Vocab
  target: Vocab
  max_decode_len: int
  # The longest training source in tokens: inference truncates longer
  # sentences. None in a file written before it was recorded.
  max_source_len: Optional[int] = None
  # The data the model was trained on (``data_settings``); None in a file
  # written before it was recorded (the tail split, targets as they are).
  data: Optional[dict] = None


def data_settings(*, split: str, target_script: str, split_seed: int = 0,
                  num_test: int = 0, num_dev: int = 0, num_samples: int = 0,
                  levels: Optional[Levels] = None) -> dict:
  """What ``vocab.json`` records of the data a model was trained on: the
  split (for the random split, every setting that decides its sentences),
  the target script, and with a subword side the ``levels``
  (``Levels.settings``). A model is only evaluated (or trained on) with
  the same: another split's test sentences may be its training ones."""
  settings = {"split": split, "target_script": target_script}
  if split == "random":
    settings.update(split_seed=split_seed, num_test=num_test,
                    num_dev=num_dev, num_samples=num_samples)
  if levels is not None:
    settings.update(levels.settings())
  return settings


UNRECORDED_DATA = {"split": "tail", "target_script": script_lib.AS_IS}


def save_vocab_file(workdir: str, vocab_file: VocabFile) -> None:
  """Writes ``<workdir>/vocab.json`` atomically (a write cut short leaves
  the old file whole), after the SentencePiece model of each subword side
  (``MODEL_FILES``)."""
  for side, vocab in (("source", vocab_file.source),
                      ("target", vocab_file.target)):
    if vocab.model is not None:
      reliability.write_atomic(os.path.join(workdir, MODEL_FILES[side]),
                               vocab.model)
  saved = {"source": vocab_file.source.to_dict(),
           "target": vocab_file.target.to_dict(),
           "max_decode_len": int(vocab_file.max_decode_len)}
  if vocab_file.max_source_len is not None:
    saved["max_source_len"] = int(vocab_file.max_source_len)
  if vocab_file.data is not None:
    saved["data"] = vocab_file.data
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
    return VocabFile(_load_vocab(workdir, saved, "source"),
                     _load_vocab(workdir, saved, "target"),
                     int(saved["max_decode_len"]),
                     int(max_src) if max_src else None,
                     saved.get("data"))
  except SeqjaxError:  # a subword model file, named already
    raise
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise SeqjaxError(f"{path} is not a vocabulary file of a translation "
                      f"model: {e}") from e


def _load_vocab(workdir: str, saved: dict, side: str) -> Vocab:
  """vocab.json's ``side`` vocabulary, with its SentencePiece model file
  where it is a subword one; a missing model file raises SeqjaxError."""
  d = saved[side]
  if d.get("level") != "subword":
    return Vocab.from_dict(d)
  path = os.path.join(workdir, MODEL_FILES[side])
  try:
    with open(path, "rb") as f:
      model = f.read()
  except OSError as e:
    raise SeqjaxError(f"{path}: the {side} SentencePiece model of "
                      f"{os.path.join(workdir, VOCAB_FILE)} cannot be read "
                      f"({e.strerror})") from e
  try:
    return Vocab.from_dict(d, model)
  except ValueError as e:
    raise SeqjaxError(f"{path}: {e}") from e
