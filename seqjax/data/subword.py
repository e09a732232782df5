"""SentencePiece subword models for one side of a pair file.

``train_model`` trains a model in memory on a list of sentences and returns
its serialized bytes; ``processor`` loads them. The options make every
training sentence round-trip exactly: no normalization (``identity``:
NFKC would rewrite e.g. full-width punctuation), spaces kept as they are,
every character of the training text in the vocabulary (coverage 1.0:
Chinese has thousands of rare characters). Training is single-threaded on
the sentences in order, so the same sentences give the same bytes.

SentencePiece's own specials are reduced to its unknown piece (id 0): the
vocabulary (``seqjax.data.vocab.Vocab``) puts its pieces behind seqjax's
padding, unknown, start and end ids, and decodes the unknown piece as
``UNK_SURFACE``.
"""

from __future__ import annotations

import io
from typing import Sequence

MODEL_TYPES = ("unigram", "bpe")
UNK_SURFACE = "\ufffd"


def _spm():
  import sentencepiece  # only subword runs need it
  return sentencepiece


def train_model(texts: Sequence[str], vocab_size: int,
                model_type: str = "unigram", word_prefix: bool = True
                ) -> bytes:
  """A SentencePiece model of ``texts`` with at most ``vocab_size`` pieces
  (fewer where the text has no more: a small corpus still trains); ->
  its serialized bytes. ``word_prefix``: a sentence's first piece starts a
  word as those after a space do (SentencePiece's dummy prefix: right for
  English); false for text without spaces between words (Chinese), where
  that marker would be decoded as a space wherever a model emits it.
  Raises ValueError for a size below the distinct characters of ``texts``,
  an unknown ``model_type``, or no text."""
  if model_type not in MODEL_TYPES:
    raise ValueError(f"unknown subword model {model_type!r}; expected one of "
                     f"{MODEL_TYPES}")
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("no text to train a subword model on")
  out = io.BytesIO()
  try:
    _spm().SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=out,
        vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=word_prefix,
        split_digits=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, unk_surface=UNK_SURFACE,
        hard_vocab_limit=False, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, max_sentence_length=1 << 16, minloglevel=2)
  except RuntimeError as e:
    # SentencePiece's message says which limit, after the failed check.
    raise ValueError(f"SentencePiece could not train a {model_type} model of "
                     f"{vocab_size} pieces on {len(texts)} sentences: "
                     f"{str(e).split('] ')[-1]}") from e
  return out.getvalue()


def processor(model: bytes):
  """A ``sentencepiece.SentencePieceProcessor`` of serialized ``model``."""
  return _spm().SentencePieceProcessor(model_proto=model)


def pieces(model: bytes) -> list[str]:
  """The model's pieces in id order, its unknown piece (id 0) left out."""
  sp = processor(model)
  return [sp.id_to_piece(i) for i in range(1, sp.get_piece_size())]
