"""--score: teacher-forced log-probabilities of (source, reference) pairs,
against the greedy search's own score of its output."""

import io
import json

import jax
import numpy as np
import pytest

from experiments import translate
from seqjax import decoding
from seqjax import translation
from seqjax.data import vocab as vocab_lib
from seqjax.errors import SeqjaxError
from tests import translate_util


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("score")
  path = translate_util.write_pairs(tmp / "pairs.txt",
                                    translate_util.toy_pairs(40))
  workdir = str(tmp / "w")
  translate.run(translate.TranslateConfig(
      data_path=path, workdir=workdir, num_samples=0, validation_split=0.25,
      latent_dim=16, batch_size=10, epochs=8, log_every=0, n_examples=0,
      num_buckets=1, progress="none", optimizer="adam", learning_rate=0.03))
  return workdir


SOURCES = [en for en, _ in translate_util.toy_pairs(40)]


def _greedy(translator, sources):
  """(text, log_prob) of the greedy search's output of each source that
  ends with the end symbol and whose text encodes back to its tokens."""
  decoder = translation.make_decoder(
      translator.spec, translator.model, translator.vocabs.max_decode_len,
      full=True, score=True, in_flight=False)
  src = vocab_lib.encode_sources(translator.vocabs.source, sources,
                                 translator.vocabs.max_source_len)
  out = jax.device_get(decoder(translator.params, src["src"],
                               src["src_mask"]))
  kept = {}
  target = translator.vocabs.target
  for i, row in enumerate(out.tokens_BT):
    ids = list(row)
    if vocab_lib.END_ID not in ids:
      continue
    ids = ids[:ids.index(vocab_lib.END_ID)]
    text = target.decode(ids)
    if text and target.encode(text)[0] == ids:
      kept[i] = (text, float(out.log_probs_B[i]))
  return kept


def _score(workdir, lines, **flags):
  out = io.StringIO()
  path = flags.pop("path")
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(l + "\n" for l in lines))
  translate.score_pairs(translate.TranslateConfig(
      workdir=workdir, score=path, **flags), out=out)
  return [json.loads(l) for l in out.getvalue().splitlines()]


def test_score_of_the_greedy_output_is_the_greedy_score(workdir, tmp_path):
  translator = translation.load_translator(workdir)
  greedy = _greedy(translator, SOURCES)
  assert len(greedy) >= 10  # enough finished outputs to compare
  rows = [i for i in greedy]
  lines = [f"{SOURCES[i]}\t{greedy[i][0]}" for i in rows]
  scored = _score(workdir, lines, path=str(tmp_path / "p.tsv"),
                  eval_batch_size=4)  # several batches, the last padded
  assert [s["line"] for s in scored] == list(range(1, len(rows) + 1))
  for i, s in zip(rows, scored):
    assert (s["source"], s["reference"]) == (SOURCES[i], greedy[i][0])
    assert s["tokens"] == list(greedy[i][0]) + [vocab_lib.END]
    np.testing.assert_allclose(s["log_prob"], greedy[i][1], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(sum(s["token_log_probs"]), s["log_prob"],
                               rtol=1e-6)
    # Greedy picks the most likely token each step: none below log(1/V).
    assert min(s["token_log_probs"]) > -np.log(len(translator.vocabs.target))


def test_another_first_token_scores_lower_and_batches_agree(workdir,
                                                            tmp_path):
  translator = translation.load_translator(workdir)
  greedy = _greedy(translator, SOURCES)
  i = next(iter(greedy))
  text = greedy[i][0]
  symbols = translator.vocabs.target.symbols[4:]  # past the special ones
  other = next(c for c in symbols if c != text[0]) + text[1:]
  lines = [f"{SOURCES[i]}\t{text}", f"{SOURCES[i]}\t{other}\textra column"]
  one = _score(workdir, lines, path=str(tmp_path / "a.tsv"),
               eval_batch_size=1)
  two = _score(workdir, lines, path=str(tmp_path / "b.tsv"))
  for a, b in zip(one, two):  # other batch shapes: other programs
    assert {k: v for k, v in a.items() if "log_prob" not in k} == {
        k: v for k, v in b.items() if "log_prob" not in k}
    np.testing.assert_allclose(a["token_log_probs"], b["token_log_probs"],
                               rtol=1e-5, atol=1e-6)
  assert one[1]["reference"] == other
  # Greedy's first token is the most likely one.
  assert one[1]["token_log_probs"][0] < one[0]["token_log_probs"][0]


def test_score_output_file(workdir, tmp_path):
  path, out = tmp_path / "p.tsv", tmp_path / "out.jsonl"
  path.write_text("cat 12.\t猫一二。\n", encoding="utf-8")
  results = translate.run(translate.TranslateConfig(
      workdir=workdir, score=str(path), score_output=str(out)))
  rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
  assert len(rows) == 1 and results["scored"] == 1
  assert rows[0]["tokens"] == list("猫一二。") + [vocab_lib.END]
  assert results["log_prob"] == rows[0]["log_prob"] < 0


@pytest.mark.parametrize("bad", ["no tab here", "\t猫。", "cat.\t", ""])
def test_a_missing_column_stops_naming_file_and_line(tmp_path, bad):
  path = tmp_path / "p.tsv"
  path.write_text(f"cat 1.\t猫一。\ndog 2.\t狗二。\n{bad}\nsun.\t日。\n",
                  encoding="utf-8")
  # No model in the workdir: the file is read (and refused) first.
  with pytest.raises(SeqjaxError, match=rf"--score={path}: line 3: "):
    translate.run(translate.TranslateConfig(workdir=str(tmp_path / "none"),
                                            score=str(path)))
  assert not (tmp_path / "none").exists()


def test_score_flags_checked():
  errors = translate.TranslateConfig(score="f.tsv").validate()
  assert any("--score needs --workdir" in e for e in errors)
  errors = translate.TranslateConfig(workdir="w", score="f", translate=["x"]
                                     ).validate()
  assert any("one at a time" in e for e in errors)
