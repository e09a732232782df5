"""The sentence encoder at inference (``--translate``), fuzzed.

Unknown characters become the unknown id and are named; an empty sentence is
refused by ``validate()`` naming ``--translate``; a sentence longer than the
longest training source is truncated to it with a warning (the choice
documented in ``experiments/translate.py`` and README's translation section).
"""

import collections
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import translate
from seqjax import evaluate
from seqjax.data import vocab_file
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import SeqjaxError
from tests import translate_util

EXAMPLES = int(os.environ.get("SEQJAX_FUZZ_EXAMPLES", 100))
OUTCOMES = collections.Counter()
_TRAIN = [en for en, _ in translate_util.toy_pairs(20)]
_SENTENCE = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from(sorted(set("".join(_TRAIN)))), max_size=30),
    st.sampled_from(["", " ", "\t\n", "cat 0é.", "猫", "\x00", "\ufeffcat",
                     "cat " * 40]))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_SENTENCE, min_size=1, max_size=4),
       st.sampled_from(["char", "word"]),
       st.one_of(st.none(), st.integers(1, 12)))
def _fuzz_encode(texts, level, width):
  vocab = Vocab.build(_TRAIN, level)
  got = vocab_lib.encode_sources(vocab, texts, width)
  # Reference: tokenize, look each symbol up in the list, cut at the width.
  tokens = [vocab_lib.tokenize(t, level) for t in texts]
  w = width if width is not None else max(max(map(len, tokens)), 1)
  assert got["src"].shape == (len(texts), w)
  for row, toks in enumerate(tokens):
    ids = [vocab.symbols.index(s) if s in vocab.symbols else vocab_lib.UNK_ID
           for s in toks][:w]
    assert list(got["src"][row, :len(ids)]) == ids
    assert not got["src"][row, len(ids):].any()  # padding
    assert list(got["src_mask"][row]) == [i < len(toks) for i in range(w)]
    assert got["src_unknown"][row] == sum(s not in vocab.symbols
                                          for s in toks)
  OUTCOMES["empty" if not any(tokens) else
           "truncated" if width and max(map(len, tokens)) > width else
           "unknown symbols" if got["src_unknown"].any() else "known"] += 1


@pytest.mark.full
def test_fuzzed_sentences_encode_like_a_symbol_lookup(capsys):
  _fuzz_encode()  # pylint: disable=no-value-for-parameter
  with capsys.disabled():
    print(f"\nsentence-encoder fuzz, {EXAMPLES} batches: {dict(OUTCOMES)}")


@pytest.mark.full
def test_fuzzed_translate_flags_refuse_empty_sentences():
  @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
            database=None)
  @given(st.lists(_SENTENCE, min_size=1, max_size=4))
  def check(sentences):
    errors = translate.TranslateConfig(workdir="w",
                                       translate=sentences).validate()
    empty = [i for i, s in enumerate(sentences, 1) if not s.strip()]
    assert len(errors) == len(empty), errors
    for i, e in zip(empty, errors):
      assert e.startswith("--translate=") and f"(sentence {i})" in e
  check()  # pylint: disable=no-value-for-parameter


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  """A tiny model trained on toy pairs (sources at most 7 characters)."""
  return translate_util.train_tiny(tmp_path_factory.mktemp("tr"))


def test_translate_truncates_long_sentences_and_names_unknowns(
    trained_workdir, capsys, caplog, monkeypatch):
  assert vocab_file.load_vocab_file(trained_workdir).max_source_len == 7
  long_ = "dog 99. cat 12. tea"
  seen = []  # the encoder's input arrays
  decode_texts = evaluate.decode_texts
  monkeypatch.setattr(evaluate, "decode_texts",
                      lambda d, p, v, arrays, b, key=None: (
                          seen.append(arrays) or
                          decode_texts(d, p, v, arrays, b, key=key)))
  got = translate.run(translate.TranslateConfig(
      workdir=trained_workdir,
      translate=["dog 99.", long_, "ü€", "cat 0é."]))["translations"]
  out = capsys.readouterr().out
  assert [g["truncated"] for g in got] == [0, len(long_) - 7, 0, 0]
  assert "dropped ' cat 12. tea'" in out
  assert any("truncated to 7 chars" in r.getMessage() for r in caplog.records)
  # Truncation is the same as translating the first 7 characters.
  (src,) = seen
  assert src["src"].shape == (4, 7)
  np.testing.assert_array_equal(src["src"][1], src["src"][0])
  assert src["src_mask"][1].all()
  assert got[1]["decoded"] == got[0]["decoded"]
  assert got[2]["unknown"] == ["ü", "€"] and "'ü', '€'" in out
  assert got[3]["unknown"] == ["é"]
  capsys.readouterr()


def test_vocab_files_without_the_length_record_do_not_truncate(
    trained_workdir, tmp_path):
  # A vocab.json of before the record: nothing is cut; a damaged one is
  # refused, naming it.
  saved = json.load(open(os.path.join(trained_workdir, vocab_file.VOCAB_FILE),
                         encoding="utf-8"))
  del saved["max_source_len"]
  (tmp_path / vocab_file.VOCAB_FILE).write_text(json.dumps(saved),
                                              encoding="utf-8")
  assert vocab_file.load_vocab_file(str(tmp_path)).max_source_len is None
  for content in ("[1, 2]", "{not json"):
    (tmp_path / vocab_file.VOCAB_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(SeqjaxError, match="not a vocabulary file"):
      vocab_file.load_vocab_file(str(tmp_path))
  assert vocab_file.load_vocab_file(str(tmp_path / "nowhere")) is None


def test_vocab_file_is_written_atomically(tmp_path, monkeypatch):
  # A write cut short (here: the rename fails) leaves the old vocab.json
  # whole and no temporary file behind.
  src = Vocab.build(["ab"], "char")
  tgt = Vocab.build(["字"], "char", target=True)
  vocab_file.save_vocab_file(str(tmp_path), vocab_file.VocabFile(src, tgt, 5, 2))
  before = (tmp_path / vocab_file.VOCAB_FILE).read_bytes()

  def fail(*args):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError):
    vocab_file.save_vocab_file(str(tmp_path), vocab_file.VocabFile(
        Vocab.build(["xyz"], "char"), tgt, 9))
  assert (tmp_path / vocab_file.VOCAB_FILE).read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == [vocab_file.VOCAB_FILE]
  monkeypatch.undo()
  assert vocab_file.load_vocab_file(str(tmp_path)) == vocab_file.VocabFile(
      src, tgt, 5, 2)
