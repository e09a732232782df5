"""Subword vocabularies (SentencePiece): exact round trips, unknown pieces,
models trained on the training split alone, and a --level=subword run."""

import itertools
import json
import os
import pickle
import random
import shutil

import numpy as np
import pytest

from experiments import translate
from seqjax import averaging
from seqjax import translation
from seqjax.data import subword as subword_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab_file
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import ParameterError, SeqjaxError
from tests import translate_util

MODEL_TYPES = subword_lib.MODEL_TYPES


def _real_pairs(n=None):
  path = translate_util.real_pair_file()
  if path is None:
    pytest.skip(translate_util.NO_REAL_FILE)
  with open(path, encoding="utf-8") as f:
    return [tuple(line.split("\t")[:2]) for line in itertools.islice(f, n)]


def _shuffled_pairs():
  """All pairs in a fixed random order (the file is sorted by length)."""
  pairs = _real_pairs()
  random.Random(0).shuffle(pairs)
  return pairs


def _vocabs(pairs, model_type, size=4000):
  return data_lib.build_vocabs(pairs, data_lib.Levels(
      "subword", "subword", size, size, model_type))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_training_sentence_round_trips(model_type):
  # No normalization and coverage 1.0: every training sentence, spaces,
  # full-width punctuation and all, comes back exactly; none excluded.
  pairs = _real_pairs(3000)
  src_vocab, tgt_vocab = _vocabs(pairs, model_type)
  sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
  src = vocab_lib.encode_sources(src_vocab, sources)
  assert src["src_unknown"].sum() == 0
  assert [src_vocab.decode(row) for row in src["src"]] == sources
  tgt = vocab_lib.encode_targets(tgt_vocab, targets)
  assert [tgt_vocab.decode(row) for row in tgt["target"]] == targets
  # Subwords: fewer symbols than characters.
  assert src["src_len"].sum() < sum(map(len, sources))
  assert tgt["target_len"].sum() - len(targets) < sum(map(len, targets))


def test_decoding_joins_the_pieces_with_no_spaces_added_to_chinese():
  # Any id sequence a model may emit: the pieces concatenated, the word
  # marker a space (targets have none at a sentence's start).
  pairs = _real_pairs(1000)
  _, tgt_vocab = _vocabs(pairs, "unigram")
  rng = np.random.default_rng(0)
  for _ in range(200):
    ids = rng.integers(vocab_lib.END_ID + 1, len(tgt_vocab), size=6)
    expected = "".join(tgt_vocab.symbols[i] for i in ids).replace("\u2581",
                                                                  " ")
    assert tgt_vocab.decode(list(ids) + [vocab_lib.END_ID, 7]) == expected
  # The word marker comes from a space in the text, never from a start.
  for _, t in pairs:
    if " " not in t:
      assert not any("\u2581" in p for p in tgt_vocab.tokenize(t)), t
  assert tgt_vocab.decode([vocab_lib.START_ID, vocab_lib.UNK_ID]) == "\ufffd"
  copied = pickle.loads(pickle.dumps(tgt_vocab))
  assert copied == tgt_vocab
  assert copied.decode(ids) == tgt_vocab.decode(ids)


@pytest.mark.parametrize("side", [0, 1])
def test_unknown_pieces_are_the_unseen_characters_and_rare(side):
  pairs = _shuffled_pairs()
  train, held = pairs[:20000], pairs[-2000:]
  vocab = _vocabs(train, "unigram")[side]
  seen = set("".join(p[side] for p in train))
  pieces = unknown = 0
  for p in held:
    ids, unk = vocab.encode(p[side])
    # Runs of characters never seen in training make the unknown pieces.
    assert "".join(unk).replace("\u2581", "") == "".join(
        c for c in p[side] if c not in seen)
    pieces, unknown = pieces + len(ids), unknown + len(unk)
  # Measured: 2 of 17,654 English pieces, 65 of 15,766 Chinese.
  assert unknown / pieces < (0.001 if side == 0 else 0.01)


def test_training_is_deterministic_and_sizes_are_named():
  texts = [t for _, t in _real_pairs(2000)]
  assert (subword_lib.train_model(texts, 3000, "bpe")
          == subword_lib.train_model(texts, 3000, "bpe"))
  with pytest.raises(ParameterError, match=r"tgt_vocab_size=100: .*smaller "
                     "than required_chars"):
    data_lib.build_vocabs([(t, t) for t in texts], data_lib.Levels(
        "char", "subword", tgt_vocab_size=100))
  with pytest.raises(ParameterError, match="target_level=word"):
    data_lib.build_vocabs([("a", "b")], data_lib.Levels("char", "word"))


def _prepare(path):
  return data_lib.prepare(
      path, num_samples=0, validation_split=0.2, strict=False,
      level=data_lib.Levels("subword", "subword", 1000, 2000),
      batch_size=16, num_buckets=1)


def test_held_out_sentences_do_not_shape_the_models(tmp_path):
  pairs = _real_pairs(1500)
  n_train = 1200  # tail split, validation_split 0.2
  # Held-out lines of a made-up word: SentencePiece would learn it.
  odd = [(f"The zorblax {i} zorblaxes.", f"左布拉克斯{i}。")
         for i in range(len(pairs) - n_train)]
  a = _prepare(translate_util.write_pairs(tmp_path / "a.txt", pairs))
  b = _prepare(translate_util.write_pairs(tmp_path / "b.txt",
                                          pairs[:n_train] + odd))
  assert a.train_pairs == b.train_pairs == pairs[:n_train]
  assert a.src_vocab.model == b.src_vocab.model
  assert a.tgt_vocab.model == b.tgt_vocab.model
  assert b.held_out["val"].sources[0] == odd[0][0]
  # Trained on them too, both models change.
  c_src, c_tgt = data_lib.build_vocabs(pairs[:n_train] + odd,
                                       data_lib.Levels("subword", "subword",
                                                       1000, 2000))
  assert c_src.model != b.src_vocab.model
  assert c_tgt.model != b.tgt_vocab.model
  assert "\u2581zorblax" in c_src.symbols
  assert "\u2581zorblax" not in b.src_vocab.symbols


# ------------------------------------------------------------ the binary

_FLAGS = dict(level="subword", embedding_dim=8, src_vocab_size=40,
              tgt_vocab_size=40, subword_model="bpe")


@pytest.fixture(scope="module")
def subword_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("subword")
  workdir = translate_util.train_tiny(tmp, **_FLAGS)
  return workdir, json.load(open(os.path.join(workdir, "results.json")))


def test_a_run_saves_models_of_its_training_split(subword_run):
  workdir, results = subword_run
  train = translate_util.toy_pairs(40)[:30]  # the tail split's training
  for side, texts, prefix in (("source", [s for s, _ in train], True),
                              ("target", [t for _, t in train], False)):
    with open(os.path.join(workdir, vocab_file.MODEL_FILES[side]), "rb") as f:
      assert f.read() == subword_lib.train_model(texts, 40, "bpe", prefix)
  vocabs = vocab_file.load_vocab_file(workdir)
  assert vocabs.source.level == vocabs.target.level == "subword"
  assert vocabs.data == {"split": "tail", "target_script": "as_is",
                         "level": "subword", "target_level": "subword",
                         "subword_model": "bpe", "src_vocab_size": 40,
                         "tgt_vocab_size": 40}
  assert results["src_vocab"] == len(vocabs.source)
  assert results["tgt_vocab"] == len(vocabs.target)


def test_translate_reads_the_models_back(subword_run):
  workdir, _ = subword_run
  out = translate.run(translate.TranslateConfig(
      workdir=workdir, translate=["cat 12.", "dog 3 zebra."]))["translations"]
  translator = translation.load_translator(workdir)
  src = translator.vocabs.source
  assert src.tokenize("cat 12.") == subword_lib.processor(src.model) \
      .encode_as_pieces("cat 12.")
  direct = translator.translate(["cat 12.", "dog 3 zebra."])
  assert [t["decoded"] for t in out] == [t.decoded for t in direct]
  assert all(" " not in t["decoded"] for t in out)
  assert out[0]["unknown"] == []
  assert "".join(out[1]["unknown"]).replace("\u2581", "") == "zb"  # unseen
  # Without its model file, or with another, the workdir is refused.
  source, target = (os.path.join(workdir, vocab_file.MODEL_FILES[side])
                    for side in ("source", "target"))
  os.rename(target, target + ".moved")
  try:
    with pytest.raises(SeqjaxError, match=r"spm_target.model: the target "
                       "SentencePiece model .* cannot be read"):
      translation.load_translator(workdir)
    shutil.copy(source, target)
    with pytest.raises(SeqjaxError, match=r"spm_target.model: .*sha256"):
      translation.load_translator(workdir)
  finally:
    os.replace(target + ".moved", target)


def test_an_averaged_subword_workdir_translates_as_its_checkpoint(
    subword_run, tmp_path):
  """Averaging one checkpoint copies it, SentencePiece models included: the
  new workdir translates exactly as the source's checkpoint."""
  workdir = str(tmp_path / "run")
  shutil.copytree(subword_run[0], workdir)
  # Without best/, a workdir hands back its newest checkpoint: the one
  # averaged.
  shutil.rmtree(os.path.join(workdir, "best"), ignore_errors=True)
  source, = averaging.last_checkpoints(workdir, 1)
  to = str(tmp_path / "avg")
  averaging.average([source], to, how="last 1")
  for name in vocab_file.MODEL_FILES.values():
    with open(os.path.join(workdir, name), "rb") as a, \
        open(os.path.join(to, name), "rb") as b:
      assert a.read() == b.read()
  averaged = translation.load_translator(to)
  assert averaged.step == source.step
  sentences = ["cat 12.", "dog 3 zebra."]
  original = translation.load_translator(workdir)
  assert original.step == source.step
  assert [t.decoded for t in averaged.translate(sentences)] == [
      t.decoded for t in original.translate(sentences)]


def test_recorded_subword_settings_bind_the_workdir(subword_run):
  workdir, trained = subword_run
  path = trained["data_path"]
  with pytest.raises(SeqjaxError, match=r"--tgt_vocab_size=40 \(now 50\)"):
    translate.run(translate.TranslateConfig(
        data_path=path, workdir=workdir, num_samples=0, validation_split=0.25,
        latent_dim=8, batch_size=10, epochs=2, log_every=0, n_examples=0,
        num_buckets=1, **{**_FLAGS, "tgt_vocab_size": 50}))
  with pytest.raises(SeqjaxError, match=r"--level=subword \(now char\)"):
    translate.run(translate.TranslateConfig(
        data_path=path, workdir=workdir, num_samples=0, validation_split=0.25,
        latent_dim=8, batch_size=10, epochs=2, log_every=0, n_examples=0,
        num_buckets=1))
  again = translate.run(translate.TranslateConfig(workdir=workdir,
                                                  eval_only=True))
  assert again["flags"]["subword_model"] == "bpe"
  assert again["val_chrf"] == pytest.approx(trained["val_chrf"], rel=1e-6)
  with pytest.raises(SeqjaxError, match=r"--src_vocab_size=64 \(recorded: "
                     r"40\)"):
    translate.run(translate.TranslateConfig(workdir=workdir, eval_only=True,
                                            src_vocab_size=64))


def test_subword_flags_are_validated():
  errors = translate.TranslateConfig(level="subword").validate()
  assert any("--level=subword needs --embedding_dim" in e for e in errors)
  levels = translate.levels(translate.TranslateConfig(
      level="subword", target_level="char", embedding_dim=8))
  assert (levels.source, levels.target) == ("subword", "char")
  assert translate.levels(translate.TranslateConfig()).target == "char"
  errors = translate.TranslateConfig(target_level="word").validate()
  assert any("--target_level" in e and "word" in e for e in errors), errors
  assert translate.levels(translate.TranslateConfig(
      level="subword")).target == "subword"
