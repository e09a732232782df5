"""The pair-file loader, vocabularies and length buckets (the splits and
scores: test_split_scores.py)."""

import itertools

import numpy as np
import pytest

from experiments import translate
from seqjax.data import pairs as pairs_lib
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import ParameterError, SeqjaxError
from tests import translate_util

# ------------------------------------------------------------------ loader


def _write_bytes(tmp_path, data: bytes, name="pairs.txt"):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def test_three_fields_bom_and_crlf(tmp_path):
  data = ("\ufeffHi.\t嗨。\tCC-BY 2.0 (France) #1\r\n"
          "Run.\t你用跑的。\tCC-BY 2.0 (France) #2\r\n").encode("utf-8")
  pf = pairs_lib.load_pairs(_write_bytes(tmp_path, data))
  assert pf.pairs == [("Hi.", "嗨。"), ("Run.", "你用跑的。")]
  assert pf.malformed == [] and pf.lines_read == 2


def test_two_fields_and_no_final_newline(tmp_path):
  data = "Hi.\t嗨。\nWait!\t等等！".encode("utf-8")
  pf = pairs_lib.load_pairs(_write_bytes(tmp_path, data))
  assert pf.pairs == [("Hi.", "嗨。"), ("Wait!", "等等！")]


def test_malformed_lines_are_counted_with_line_numbers(tmp_path):
  data = (b"Hi.\t\xe5\x97\xa8\xe3\x80\x82\n"        # 1 ok
          b"no tab at all\n"                        # 2 one field
          b"a\tb\tc\td\n"                           # 3 four fields
          b"\n"                                     # 4 blank: skipped
          b"Bad \xff byte.\t\xe5\x97\xa8\n"         # 5 not UTF-8
          b"Empty.\t \tattr\n"                      # 6 empty target
          b"Go.\t\xe8\xb5\xb0\xe3\x80\x82\tattr\n")  # 7 ok
  path = _write_bytes(tmp_path, data)
  pf = pairs_lib.load_pairs(path)
  assert pf.pairs == [("Hi.", "嗨。"), ("Go.", "走。")]
  assert [n for n, _ in pf.malformed] == [2, 3, 5, 6]
  reasons = dict(pf.malformed)
  assert "found 1" in reasons[2] and "found 4" in reasons[3]
  assert "not UTF-8" in reasons[5] and "0xff" in reasons[5]
  assert "empty target" in reasons[6]
  text = pairs_lib.describe_malformed(pf)
  assert "4 malformed" in text and "line 5: not UTF-8" in text
  with pytest.raises(SeqjaxError, match=r"pairs.txt:2: expected 2 or 3"):
    pairs_lib.load_pairs(path, strict=True)


def test_num_samples_takes_the_first_valid_pairs(tmp_path):
  path = translate_util.write_pairs(tmp_path / "p.txt",
                                    translate_util.toy_pairs(20))
  pf = pairs_lib.load_pairs(path, num_samples=5)
  assert pf.pairs == translate_util.toy_pairs(5) and pf.lines_read == 5


@pytest.mark.parametrize("data,match", [
    (b"", "is empty"), (b"\xef\xbb\xbf\r\n\n", "is empty"),
    (b"one field\nstill one\n", "no valid sentence pair.*line 1"),
])
def test_empty_or_invalid_file_is_refused(tmp_path, data, match):
  with pytest.raises(SeqjaxError, match=match):
    pairs_lib.load_pairs(_write_bytes(tmp_path, data))


def test_missing_file_says_where_pairs_come_from(tmp_path):
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(ParameterError, match="manythings.org/anki") as e:
    pairs_lib.load_pairs(missing)
  assert str(e.value).startswith(f"path={missing}: no such file")
  # The binary names its flag.
  assert str(translate.flag_error(e.value)).startswith(
      f"--data_path={missing}: no such file")


@pytest.mark.parametrize("n,split,n_train", [(10, 0.2, 8), (7, 0.2, 5),
                                             (10_000, 0.2, 8000)])
def test_split_holds_out_the_last_fraction_as_keras(n, split, n_train):
  items = list(range(n))
  train, val = pairs_lib.split_pairs(items, split)
  # Keras: split_at = int(n * (1 - validation_split)), no shuffling.
  assert train == items[:n_train] and val == items[n_train:]


# -------------------------------------------------------------- vocabulary


def test_char_vocab_round_trip_and_arrays():
  pairs_ = translate_util.toy_pairs(30)
  src_v = Vocab.build([e for e, _ in pairs_], "char")
  tgt_v = Vocab.build([z for _, z in pairs_], "char", target=True)
  assert src_v.symbols[:2] == ["<pad>", "<unk>"]
  assert tgt_v.symbols[:4] == ["<pad>", "<unk>", "\t", "\n"]
  assert sorted(src_v.symbols[2:]) == src_v.symbols[2:]
  assert set(src_v.symbols[2:]) == set("".join(e for e, _ in pairs_))
  texts = [z for _, z in pairs_]
  arrays = vocab_lib.encode_targets(tgt_v, texts)
  for i, text in enumerate(texts):
    n = len(text) + 1
    assert tgt_v.decode(arrays["target"][i]) == text
    assert arrays["dec_in"][i, 0] == vocab_lib.START_ID
    assert arrays["target"][i, n - 1] == vocab_lib.END_ID
    np.testing.assert_array_equal(arrays["dec_in"][i, 1:n],
                                  arrays["target"][i, :n - 1])
    assert arrays["target_mask"][i].sum() == n == arrays["target_len"][i]
    assert (arrays["target"][i, n:] == vocab_lib.PAD_ID).all()
  src = vocab_lib.encode_sources(src_v, [e for e, _ in pairs_])
  for i, (en, _) in enumerate(pairs_):
    assert src_v.decode(src["src"][i]) == en
    assert src["src_mask"][i].sum() == len(en)
  # Saved and loaded: the same symbols, the same fingerprint.
  again = Vocab.from_dict(tgt_v.to_dict())
  assert again == tgt_v and again.fingerprint() == tgt_v.fingerprint()
  assert Vocab.build(["ab"]).fingerprint() != Vocab.build(["abc"]).fingerprint()


def test_unknown_symbols():
  v = Vocab.build(["abc"], "char")
  ids, unknown = v.encode("abxa")
  assert unknown == ["x"] and ids[2] == vocab_lib.UNK_ID
  assert v.decode(ids) == "ab\ufffda"
  arrays = vocab_lib.encode_sources(v, ["abxa", "xx"])
  assert arrays["src_unknown"].tolist() == [1, 2]


def test_word_level_splits_words_and_punctuation():
  assert vocab_lib.tokenize("Don't go, Tom!", "word") == [
      "don", "'", "t", "go", ",", "tom", "!"]
  v = Vocab.build(["Tom is here.", "Go, Tom!"], "word")
  assert set(v.symbols[2:]) == {"tom", "is", "here", ".", "go", ",", "!"}
  ids, unknown = v.encode("Tom is there!")
  assert unknown == ["there"]
  assert v.decode(ids) == "tom is \ufffd !"


def test_keras_counts_on_the_real_file():
  """The Keras example reports 72 input / 2511 output characters for the
  first 10,000 pairs of this file; our vocabulary adds padding and unknown."""
  path = translate_util.real_pair_file()
  if path is None:
    pytest.skip(translate_util.NO_REAL_FILE)
  pf = pairs_lib.load_pairs(path, num_samples=10_000)
  assert len(pf.pairs) == 10_000 and not pf.malformed
  assert len(Vocab.build([e for e, _ in pf.pairs], "char")) == 72 + 2
  assert len(Vocab.build([z for _, z in pf.pairs], "char", True)) == 2511 + 2


def test_length_buckets_cover_every_row_once():
  rng = np.random.default_rng(0)
  tgt = rng.integers(3, 30, 1000)
  src = tgt + rng.integers(0, 10, 1000)
  buckets = vocab_lib.length_buckets(src, tgt, 4, min_size=64)
  rows = np.concatenate([r for r, _, _ in buckets])
  np.testing.assert_array_equal(np.sort(rows), np.arange(1000))
  assert 1 < len(buckets) <= 4
  for r, src_w, tgt_w in buckets:
    assert len(r) >= 64 and src_w == src[r].max() and tgt_w == tgt[r].max()
  # Shortest first, and bucketing pads less than one width for all.
  widths = [t for _, _, t in buckets]
  assert widths == sorted(widths)
  assert sum(len(r) * t for r, _, t in buckets) < 0.8 * 1000 * tgt.max()
  # A tiny bucket is merged into a neighbour.
  skewed = np.array([2] * 5 + [9] * 500)
  assert len(vocab_lib.length_buckets(skewed, skewed, 4, min_size=64)) == 1


@pytest.mark.parametrize("by", vocab_lib.BUCKET_BY)
@pytest.mark.parametrize("seed", range(6))
def test_length_buckets_minimize_padded_work_like_brute_force(seed, by):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(20, 80))
  tgt = rng.integers(1, 9, n)
  src = rng.integers(1, 12, n)
  num_buckets, min_size, target_cost = int(rng.integers(1, 5)), 6, 2.5

  def work(groups):
    return sum(len(g) * (src[g].max() + target_cost * tgt[g].max())
               for g in groups)
  # Every split of the sorted distinct keys into <= num_buckets runs: the
  # target lengths, or each pair's work.
  key = tgt if by == "target" else src + target_cost * tgt
  values = np.unique(key)
  best = np.inf
  for cuts in range(num_buckets):
    for chosen in itertools.combinations(range(1, len(values)), cuts):
      edges = [0, *chosen, len(values)]
      groups = [np.flatnonzero(np.isin(key, values[a:b]))
                for a, b in zip(edges[:-1], edges[1:])]
      if all(len(g) >= min_size for g in groups):
        best = min(best, work(groups))
  buckets = vocab_lib.length_buckets(src, tgt, num_buckets, min_size,
                                     target_cost, by)
  assert len(buckets) <= num_buckets
  assert work([r for r, _, _ in buckets]) == pytest.approx(best)
  rows = np.concatenate([r for r, _, _ in buckets])
  np.testing.assert_array_equal(np.sort(rows), np.arange(n))
