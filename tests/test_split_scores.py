"""The random split by English sentence, multi-reference scores (against
sacrebleu called directly), Chinese script conversion, and the translate
binary's evaluation on the random split."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu

from experiments import sweep
from experiments import translate
from seqjax import evaluate
from seqjax.data import pairs as pairs_lib
from seqjax.data import script as script_lib
from seqjax.data import translation as data_lib
from seqjax.errors import ParameterError, SeqjaxError
from tests import translate_util

# ------------------------------------------------------------ random split


def _pairs():
  """12 English sentences, 1-3 translations each, repeats interleaved."""
  pairs = []
  for i in range(12):
    pairs += [(f"s{i}.", f"t{i}-{k}") for k in range(1 + i % 3)]
  # Later translations of early sentences, after other sentences.
  return pairs + [("s0.", "t0-late"), ("s4.", "t4-late")]


def test_every_sentence_on_one_side_with_all_its_references():
  pairs = _pairs()
  split = pairs_lib.split_random(pairs, seed=3, num_test=3, num_dev=2)
  train_src = {s for s, _ in split.train}
  test_src = [s for s, _ in split.test]
  dev_src = [s for s, _ in split.dev]
  assert len(test_src) == 3 and len(dev_src) == 2 and split.n_sources == 12
  assert not train_src & set(test_src) and not train_src & set(dev_src)
  assert not set(test_src) & set(dev_src)
  assert len(train_src) == split.n_train_sources == 7
  # Every translation of a held-out sentence is a reference, in file order;
  # the training side keeps all the pairs of its sentences, in file order.
  for s, refs in split.test + split.dev:
    assert refs == [t for src, t in pairs if src == s]
  assert split.train == [(s, t) for s, t in pairs if s in train_src]


def test_the_same_seed_gives_the_same_split_another_seed_another():
  pairs = _pairs()
  one = pairs_lib.split_random(pairs, 0, 3, 2)
  assert one == pairs_lib.split_random(list(pairs), 0, 3, 2)
  others = [pairs_lib.split_random(pairs, seed, 3, 2) for seed in (1, 2)]
  assert all([s for s, _ in o.test] != [s for s, _ in one.test]
             for o in others)


def test_the_readme_order_by_hand():
  # numpy's permutation of the distinct sentences in first-appearance
  # order: test first, then dev.
  pairs = _pairs()
  order = np.random.default_rng(5).permutation(12)
  split = pairs_lib.split_random(pairs, 5, 4, 3)
  assert [s for s, _ in split.test] == [f"s{i}." for i in order[:4]]
  assert [s for s, _ in split.dev] == [f"s{i}." for i in order[4:7]]


def test_too_many_held_out_sentences_is_refused_naming_the_flag(tmp_path):
  pairs = _pairs()
  with pytest.raises(ParameterError, match="num_test=10: .*10 \\+ 2 = 12.* "
                     "12 distinct") as e:
    pairs_lib.split_random(pairs, 0, 10, 2)
  assert e.value.param == "num_test"
  pairs_lib.split_random(pairs, 0, 10, 1)  # one training sentence is enough
  path = translate_util.write_pairs(tmp_path / "p.txt", pairs)
  workdir = tmp_path / "w"
  with pytest.raises(SeqjaxError, match="^--num_test=10: num_test \\+ "
                     "num_dev"):
    translate.run(translate.TranslateConfig(
        data_path=path, workdir=str(workdir), split="random", num_test=10,
        num_dev=2, batch_size=2))
  assert not workdir.exists()  # before any work


def test_the_shared_file_split_is_the_readme_one():
  path = translate_util.real_pair_file()
  if path is None:
    pytest.skip(translate_util.NO_REAL_FILE)
  pf = pairs_lib.load_pairs(path)
  split = pairs_lib.split_random(pf.pairs, 0, 1000, 500)
  assert split.n_sources == 25_331 and len(split.train) == 24_830
  assert [s for s, _ in split.test[:3]] == [
      "You'll love it.", "Who's your favorite character in this book?",
      "I work in Boston now."]
  # The binary reads all pairs for the random split unless told otherwise.
  config = translate.TranslateConfig(data_path=path, split="random")
  assert translate.num_samples(config) == 0
  assert translate.num_samples(translate.TranslateConfig()) == 10_000
  data = translate.prepare_data(config)
  counts = data.counts()
  assert (counts["n_train"], counts["n_test"], counts["n_dev"]) == (
      24_830, 1000, 500)
  assert counts["n_train_sentences"] == 25_331 - 1500
  assert counts["n_test_references"] == sum(len(r) for _, r in split.test)
  assert data.held_out["test"].references[0] == split.test[0][1]


# --------------------------------------------------- multi-reference scores


def test_multi_reference_scores_equal_sacrebleus():
  hyps = ["我爱你。", "他是个好人。", "今天很冷", "猫"]
  refs = [["我愛你。", "我爱你。"], ["他是好人。"],
          ["今天很冷。", "今天好冷。", "天气很冷。"], ["狗"]]
  # The reference streams by hand: None where a sentence has fewer.
  streams = [["我愛你。", "他是好人。", "今天很冷。", "狗"],
             ["我爱你。", None, "今天好冷。", None],
             [None, None, "天气很冷。", None]]
  got = evaluate.score(hyps, refs)
  bleu = sacrebleu.corpus_bleu(hyps, streams, tokenize="zh")
  chrf = sacrebleu.corpus_chrf(hyps, streams)
  assert got["bleu"] == pytest.approx(bleu.score, abs=1e-9)
  assert got["chrf"] == pytest.approx(chrf.score, abs=1e-9)
  assert 0 < got["chrf"] < 100 and 0 < got["bleu"] < 100
  # Exact match against any reference: sentence 0 matches its second.
  assert got["exact_match"] == 0.25
  assert "nrefs:var" in got["bleu_signature"]
  assert "tok:zh" in got["bleu_signature"]
  assert got["chrf_signature"].startswith("nrefs:var|case:mixed|eff:yes|nc:6")


def test_a_second_reference_raises_the_score():
  hyps = ["他是好人。", "你好"]
  one = evaluate.score(hyps, [["他是個好人。"], ["你好。"]])
  two = evaluate.score(hyps, [["他是個好人。", "他是好人。"], ["你好。"]])
  assert two["chrf"] > one["chrf"] and two["bleu"] > one["bleu"]
  assert (one["exact_match"], two["exact_match"]) == (0.0, 0.5)
  assert two["chrf"] == pytest.approx(sacrebleu.corpus_chrf(
      hyps, [["他是個好人。", "你好。"], ["他是好人。", None]]).score)
  # An exact match of every sentence scores 100 whichever reference it is.
  full = evaluate.score(["他是好人。"], [["他是個好人。", "他是好人。"]])
  assert full["chrf"] == pytest.approx(100) and full["exact_match"] == 1.0


def test_single_references_as_strings_and_bad_input():
  hyps, refs = ["嗨。", "跑", "x"], ["嗨。", "跑！", "走。"]
  got = evaluate.score(hyps, refs)
  assert got == evaluate.score(hyps, [[r] for r in refs])
  assert got["bleu"] == pytest.approx(
      sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)
  assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
  assert "nrefs:1" in got["chrf_signature"]
  with pytest.raises(ValueError, match="2 hypotheses, 3 references"):
    evaluate.score(hyps[:2], refs)
  with pytest.raises(ValueError, match="sentence 1 has no reference"):
    evaluate.score(hyps, [["嗨。"], [], ["走。"]])


def test_epoch_end_decodes_the_held_out_set_and_scores_it(capsys):
  # A "decoder" that writes its source back: the sources are the target ids
  # of known hypotheses, so the scores can be computed without a model.
  from seqjax.data import vocab as vocab_lib
  hyps = ["我爱你。", "他是好人", "猫"]
  refs = [["我愛你。", "我爱你。"], ["他是好人。"], ["狗"]]
  vocab = vocab_lib.Vocab.build(hyps + [r for rs in refs for r in rs], "char",
                                target=True)
  ids = vocab_lib.encode_targets(vocab, hyps)["target"]  # ends at "\n"
  held = evaluate.HeldOut("dev", ["a", "b", "c"], refs,
                          {"src": ids, "src_mask": ids > 0}, {})
  arrays = {"target_mask": np.ones((4, 2), bool)}
  eval_step = lambda params, batch: {"loss": 2.0, "token_accuracy": 0.5}
  decoder = lambda params, src, mask, key=None: src
  hook = evaluate.HeldOutLoss(eval_step, arrays, 2, 5, decoder=decoder,
                              held_out=held, tgt_vocab=vocab)
  state = types.SimpleNamespace(params=None)
  row = hook.epoch_end(state, 1)
  streams = [["我愛你。", "他是好人。", "狗"], ["我爱你。", None, None]]
  assert row == pytest.approx({
      "dev_loss": 2.0, "dev_token_accuracy": 0.5,
      "dev_chrf": sacrebleu.corpus_chrf(hyps, streams).score,
      "dev_bleu": sacrebleu.corpus_bleu(hyps, streams, tokenize="zh").score})
  assert "Epoch 1/5:" in capsys.readouterr().out
  # Without a decoder: the loss only, under the given name.
  plain = evaluate.HeldOutLoss(eval_step, arrays, 2, 5).epoch_end(state, 1)
  assert plain == {"val_loss": 2.0, "val_token_accuracy": 0.5}


def test_compile_ahead_leaves_the_epoch_end_nothing_to_compile():
  from seqjax.data import vocab as vocab_lib
  from seqjax.training import programs, steps
  vocab = vocab_lib.Vocab.build(["我爱你。"], "char", target=True)
  ids = vocab_lib.encode_targets(vocab, ["我爱你。", "我"] * 3)["target"]
  held = evaluate.HeldOut("dev", list("abcdef"), [["我"]] * 6,
                          {"src": ids, "src_mask": ids > 0}, {})
  arrays = {"target": ids, "target_mask": ids > 0}

  @jax.jit
  def eval_step_ahead(params, batch):
    return {"loss": params * batch["target"].sum(),
            "token_accuracy": batch["target_mask"].mean()}

  @jax.jit
  def run_ahead(params, src, mask, key=None):
    return jnp.where(mask, src, 0) + (params * 0).astype(src.dtype)

  hook = evaluate.HeldOutLoss(eval_step_ahead, arrays, 4, 1,
                              decoder=run_ahead, held_out=held,
                              tgt_vocab=vocab)
  params = jnp.float32(1.0)
  hook.compile_ahead(params)
  programs.wait_for_background()
  assert steps.compiles_of(eval_step_ahead) == 1
  assert steps.compiles_of(run_ahead) == 1
  hook(types.SimpleNamespace(params=params), 1)
  assert steps.compiles_of(eval_step_ahead) == 1  # none at the epoch end
  assert steps.compiles_of(run_ahead) == 1


# ------------------------------------------------------------------ script


def test_target_script_conversion_on_known_text(tmp_path):
  pytest.importorskip("opencc")
  assert script_lib.converter("simplified")("漢語") == "汉语"
  assert script_lib.converter("traditional")("汉语") == "漢語"
  assert script_lib.converter("simplified")("汉语") == "汉语"  # unchanged
  assert script_lib.converter("as_is")("漢語") == "漢語"
  with pytest.raises(ParameterError, match="script=latin"):
    script_lib.converter("latin")
  # The pipeline converts training targets and references alike.
  pairs = [(f"s{i}.", "漢語" if i % 2 else "汉语") for i in range(12)]
  path = translate_util.write_pairs(tmp_path / "p.txt", pairs)
  data = data_lib.prepare(
      path, num_samples=0, validation_split=0.25, strict=False, level="char",
      batch_size=2, num_buckets=1, split="random", num_test=2, num_dev=2,
      target_script="simplified")
  assert {t for _, t in data.train_pairs} == {"汉语"}
  assert all(r == ["汉语"] for h in data.held_out.values()
             for r in h.references)
  assert "漢" not in data.tgt_vocab.symbols


def test_scores_in_one_script_beside_the_raw_ones():
  pytest.importorskip("opencc")
  views = {"simplified": script_lib.converter("simplified")}
  got = evaluate.score_views(["汉语。"], [["漢語。"]], views)
  assert got["exact_match"] == 0.0 and got["exact_match_simplified"] == 1.0
  assert got["chrf_simplified"] == pytest.approx(100)
  assert "bleu_signature" in got and "bleu_signature_simplified" not in got
  # One reference a sentence, as strings: the same.
  assert evaluate.score_views(["汉语。"], ["漢語。"], views) == got


# ------------------------------------------------------------- the binary

SMALL = dict(num_samples=0, latent_dim=16, batch_size=10, optimizer="adam",
             learning_rate=0.02, n_examples=2, log_every=0, epochs=2,
             num_buckets=1, split="random", num_test=6, num_dev=4)


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
  # 50 sentences; every one of the first 10 with a second translation.
  pairs = translate_util.toy_pairs(50)
  pairs += [(en, zh + "！") for en, zh in pairs[:10]]
  path = tmp_path_factory.mktemp("split") / "pairs.txt"
  return translate_util.write_pairs(path, pairs), pairs


def test_random_split_run_scores_dev_each_epoch_and_test_at_the_end(
    pair_file, tmp_path, capsys):
  path, pairs = pair_file
  workdir = str(tmp_path / "w")
  config = translate.TranslateConfig(data_path=path, workdir=workdir, **SMALL)
  data = translate.prepare_data(config)
  test_src = set(data.held_out["test"].sources)
  assert not test_src & {s for s, _ in data.train_pairs}
  results = translate.run(config)
  capsys.readouterr()
  assert (results["n_test"], results["n_dev"]) == (6, 4)
  assert results["n_train"] + results["n_test_references"] + results[
      "n_dev_references"] == len(pairs)
  for name in ("dev", "test"):
    for key in ("chrf", "bleu", "chrf_simplified", "bleu_simplified"):
      assert 0 <= results[f"{name}_{key}"] <= 100, key
    for key in ("exact_match", "exact_match_simplified", "token_accuracy"):
      assert 0 <= results[f"{name}_{key}"] <= 1, key
    assert np.isfinite(results[f"{name}_loss"])
    assert "tok:zh" in results[f"{name}_bleu_signature"]
    assert "chrF" not in results[f"{name}_chrf_signature"]  # sacrebleu's own
  assert "val_chrf" not in results and results["reported_set"] == "test"
  assert results["select_metric"] == "dev_chrf"
  assert results["split_settings"] == dict(
      split="random", target_script="as_is", split_seed=0, num_test=6,
      num_dev=4, num_samples=0)
  examples = results["examples"]
  assert all(e["input"] in test_src for e in examples)
  # Per epoch: the dev set's loss, chrF and BLEU; never a test score.
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in rows if r.get("eval")]
  assert len(evals) == 2
  assert all({"dev_loss", "dev_chrf", "dev_bleu"} <= set(r) for r in evals)
  assert not any(k.startswith("test_") for r in rows for k in r)
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["test_chrf"] == results["test_chrf"]
  assert saved["split_settings"]["split"] == "random"

  # The model trained on this split is not evaluated on another one (its
  # test sentences could be the other's training ones): stopped, untouched.
  before = open(os.path.join(workdir, "results.json"), "rb").read()
  for flags, name in ((dict(split="tail"), "--split=random"),
                      (dict(split_seed=1), "--split_seed=0")):
    with pytest.raises(SeqjaxError, match=name):
      translate.run(translate.TranslateConfig(
          data_path=path, workdir=workdir, **{**SMALL, **flags}))
  assert open(os.path.join(workdir, "results.json"), "rb").read() == before


def test_the_sweep_ranks_a_random_split_by_dev(tmp_path):
  task = translate.TASK
  assert task.metric_for(translate.TranslateConfig(split="random")) == (
      "dev_chrf")
  assert task.metric_for(translate.TranslateConfig()) == "val_chrf"
  plan = sweep.plan_sweep("translate", "split=random latent_dim=8,16",
                          str(tmp_path / "s"))
  assert plan.metric == "dev_chrf"
  with pytest.raises(SeqjaxError, match="different metrics"):
    sweep.plan_sweep("translate", "split=tail,random", str(tmp_path / "s"))
