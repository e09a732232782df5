"""Beam search and sampling in the binaries: translate (held-out
evaluation, per-epoch dev decoding, --translate with --n_best), reverse and
addition; bad settings named before any work."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import addition, reverse, translate
from seqjax import translation
from seqjax.data import vocab as vocab_lib
from seqjax.errors import SeqjaxError
from tests import translate_util

# The toy pairs 8 times over; the held-out split is the last copy, so a
# model that memorised the training pairs decodes every held-out one.
TOY = dict(num_samples=0, validation_split=0.125, latent_dim=64,
           batch_size=10, optimizer="adam", learning_rate=0.02, n_examples=0,
           log_every=0, epochs=6, n_attention_plots=0)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("toy") / "pairs.txt"
  return translate_util.write_pairs(path, translate_util.toy_pairs(50) * 8)


@pytest.fixture(scope="module")
def trained(toy_file, tmp_path_factory):
  """A memorising model trained with beam-3 final and beam-2 dev decoding."""
  workdir = str(tmp_path_factory.mktemp("beam") / "w")
  results = translate.run(translate.TranslateConfig(
      data_path=toy_file, workdir=workdir, beam_size=3, dev_beam_size=2,
      length_penalty=0.5, **TOY))
  return workdir, results


def test_translate_records_its_searches_and_decodes_by_beam(trained):
  workdir, results = trained
  assert results["decoder"] == {"name": "beam", "beam_size": 3,
                                "length_penalty": 0.5}
  assert results["dev_decoder"] == {"name": "beam", "beam_size": 2,
                                    "length_penalty": 0.5}
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["decoder"] == results["decoder"]
  assert results["val_exact_match"] == 1.0
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["val_chrf"] for r in rows if r.get("eval")][-1] == pytest.approx(
      100)


def _teacher_forced_score(translator, sentence, text, alpha):
  """log P(text + end | sentence) / GNMT penalty, by the whole-sequence
  (teacher-forced) model: independent of the search."""
  tgt = translator.vocabs.target
  ids = tgt.encode(text)[0] + [vocab_lib.END_ID]
  src = vocab_lib.encode_sources(translator.vocabs.source, [sentence])
  dec_in = np.array([[vocab_lib.START_ID] + ids[:-1]], np.int32)
  logits = np.asarray(translator.model.apply(
      translator.params, src["src"], dec_in, src["src_mask"]), np.float64)[0]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  total = sum(logp[t, i] for t, i in enumerate(ids))
  return total / ((5 + len(ids)) / 6) ** alpha


def test_translate_n_best_gives_scored_alternatives(trained, capsys):
  workdir, _ = trained
  (en0, zh0), (en7, zh7) = translate_util.toy_pairs(8)[0::7]
  got = translate.run(translate.TranslateConfig(
      workdir=workdir, translate=[en7, en0], beam_size=4, n_best=3,
      length_penalty=0.5))
  out = capsys.readouterr().out
  assert got["decoder"]["beam_size"] == 4
  assert [g["decoded"] for g in got["translations"]] == [zh7, zh0]
  translator = translation.load_translator(workdir)
  for g in got["translations"]:
    texts, scores = zip(*g["n_best"])
    assert len(texts) == 3 and texts[0] == g["decoded"]
    assert list(scores) == sorted(scores, reverse=True)
    assert len(set(texts)) == 3
    for text, score in g["n_best"]:
      assert score == pytest.approx(
          _teacher_forced_score(translator, g["input"], text, 0.5), rel=1e-4)
      assert f"{score:9.4f}  {text}" in out


def _sampled(workdir, sentences, **flags):
  return translate.run(translate.TranslateConfig(
      workdir=workdir, translate=sentences, sampling_temperature=2.0,
      top_k=4, n_best=5, **flags))


def test_translate_samples_n_best_with_their_log_probabilities(trained,
                                                               capsys):
  workdir, _ = trained
  sentences = [en for en, _ in translate_util.toy_pairs(8)[0::7]]
  got = _sampled(workdir, sentences, sampling_seed=7)
  out = capsys.readouterr().out
  assert got["decoder"] == {"name": "sampling", "temperature": 2.0,
                            "top_k": 4, "top_p": 1.0, "seed": 7}
  assert _sampled(workdir, sentences, sampling_seed=7) == got
  translator = translation.load_translator(workdir)
  max_len = translator.vocabs.max_decode_len
  for g in got["translations"]:
    texts, scores = zip(*g["n_best"])
    assert len(texts) == 5 and texts[0] == g["decoded"]
    assert list(scores) == sorted(scores, reverse=True)
    for text, score in g["n_best"]:
      assert f"{score:9.4f}  {text}" in out
      if len(translator.vocabs.target.encode(text)[0]) < max_len:  # ended
        assert score == pytest.approx(
            _teacher_forced_score(translator, g["input"], text, 0.0),
            rel=1e-4)
  # The seed defaults to --seed.
  assert _sampled(workdir, sentences, seed=7) == got


def test_translator_samples_by_its_key(trained):
  workdir, _ = trained
  sentences = [en for en, _ in translate_util.toy_pairs(50)[::5]]
  sample = lambda seed: [t.decoded for t in translation.load_translator(
      workdir, translation.decoding.Sampling(5.0),
      key=jax.random.key(seed)).translate(sentences)]
  first = sample(1)
  assert sample(1) == first
  assert sample(2) != first


def test_translate_beam_one_is_the_greedy_translation(trained):
  workdir, _ = trained
  sentences = [en for en, _ in translate_util.toy_pairs(50)[::5]]
  greedy = translation.load_translator(workdir).translate(sentences)
  beam = translation.load_translator(
      workdir, translation.decoding.BeamSearch(1)).translate(sentences)
  assert [t.decoded for t in beam] == [t.decoded for t in greedy]


@pytest.mark.parametrize("flags, name", [
    (dict(beam_size=2, n_best=3), "--n_best=3"),
    (dict(length_penalty=-0.5), "--length_penalty"),
    (dict(beam_size=0), "--beam_size"),
    (dict(dev_beam_size=0), "--dev_beam_size"),
    (dict(beam_size=3, teacher_forcing=False), "--beam_size=3: beam search"),
])
def test_bad_translate_flags_are_named(flags, name):
  cfg = translate.TranslateConfig(**flags)
  assert any(name in e for e in cfg.validate()), cfg.validate()
  with pytest.raises(SeqjaxError, match=name):
    translate.run(cfg)


@pytest.mark.parametrize("flag", ["beam_size", "dev_beam_size"])
def test_translate_beam_wider_than_the_vocabulary_stops_before_training(
    toy_file, tmp_path, flag):
  workdir = tmp_path / "w"
  with pytest.raises(SeqjaxError, match=f"--{flag}=500 exceeds the"):
    translate.run(translate.TranslateConfig(
        data_path=toy_file, workdir=str(workdir), **{**TOY, flag: 500}))
  assert not (workdir / "checkpoints").exists()


def test_translate_sentences_beam_wider_than_the_vocabulary(trained):
  workdir, _ = trained
  with pytest.raises(SeqjaxError, match="--beam_size=500"):
    translate.run(translate.TranslateConfig(workdir=workdir,
                                            translate=["cat 1."],
                                            beam_size=500))


@pytest.mark.full
def test_reverse_beam_search_finds_what_greedy_does_on_a_trained_model(
    tmp_path):
  kw = dict(n_features=8, n_steps_in=4, n_steps_out=3, n_units=32,
            n_samples=8000, n_eval=200, epochs=4, n_examples=0, log_every=0,
            learning_rate=0.01)
  greedy = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path / "w"),
                                             **kw))
  beam = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path / "w"),
                                           eval_only=True, beam_size=4, **kw))
  assert greedy["decoder"] == {"name": "greedy"}
  assert beam["decoder"] == {"name": "beam", "beam_size": 4,
                             "length_penalty": 0.0}
  assert greedy["accuracy"] > 0.9
  # A confident model: the most likely sequence is the greedy one (or
  # better, hence at least as accurate).
  assert beam["accuracy"] >= greedy["accuracy"] - 0.01


SAMPLING_ERRORS = [
    (dict(sampling_temperature=1.0, beam_size=2),
     "--sampling_temperature=1.0 samples; --beam_size=2 searches"),
    (dict(sampling_temperature=-0.5), "--sampling_temperature must be"),
    (dict(sampling_temperature=1.0, top_p=1.5), "--top_p must be"),
    (dict(sampling_temperature=1.0, top_p=0.0), "--top_p must be"),
    (dict(sampling_temperature=1.0, top_k=-1), "--top_k must be"),
    (dict(top_k=3), "--top_k=3 applies to sampling only"),
    (dict(sampling_seed=3), "--sampling_seed=3 applies to sampling only"),
]


@pytest.mark.parametrize("task", [translate, reverse, addition],
                         ids=lambda t: t.TASK.name)
@pytest.mark.parametrize("flags, name", SAMPLING_ERRORS)
def test_bad_sampling_flags_are_named_before_any_work(task, flags, name,
                                                      tmp_path):
  cfg = task.TASK.config_cls(workdir=str(tmp_path / "w"), **flags)
  with pytest.raises(SeqjaxError, match=name):
    task.run(cfg)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("task, flags, name", [
    (reverse, dict(beam_size=52), "--beam_size=52 exceeds the 51"),
    (reverse, dict(beam_size=2, model="repeat_vector"), "--beam_size=2"),
    (addition, dict(beam_size=2), "--beam_size=2: beam search"),
    (addition, dict(model="encoder_decoder", dev_beam_size=14),
     "--dev_beam_size=14 exceeds the 13"),
])
def test_bad_beam_flags_of_other_tasks(task, flags, name, tmp_path):
  cfg = task.TASK.config_cls(workdir=str(tmp_path / "w"), **flags)
  with pytest.raises(SeqjaxError, match=name):
    task.run(cfg)
  assert not (tmp_path / "w").exists()


@pytest.mark.full
def test_addition_beam_evaluation_records_both_searches(tmp_path):
  results = addition.run(addition.AdditionConfig(
      workdir=str(tmp_path / "w"), model="encoder_decoder", epochs=1,
      training_size=2000, hidden_size=16, n_examples=0, log_every=0,
      beam_size=3))
  assert results["decoder"]["name"] == "beam"
  assert results["dev_decoder"] == {"name": "greedy"}
  assert 0 <= results["test_exact_match"] <= 1


@pytest.mark.full
def test_reverse_samples_the_same_outputs_from_the_same_seed(tmp_path,
                                                             capsys):
  kw = dict(n_features=8, n_steps_in=4, n_steps_out=3, n_units=16,
            n_samples=500, n_eval=300, epochs=1, n_examples=20,
            log_every=0, workdir=str(tmp_path / "w"))
  reverse.run(reverse.ReverseConfig(**kw))
  capsys.readouterr()

  def sample(**flags):
    results = reverse.run(reverse.ReverseConfig(
        eval_only=True, sampling_temperature=3.0, top_p=0.9, **flags, **kw))
    shown = [l for l in capsys.readouterr().out.splitlines()
             if "yhat=" in l]
    return results, shown
  first, shown = sample(sampling_seed=5)
  assert first["decoder"] == {"name": "sampling", "temperature": 3.0,
                              "top_k": 0, "top_p": 0.9, "seed": 5}
  again, shown_again = sample(sampling_seed=5)
  assert shown_again == shown and len(shown) == 20
  assert again["accuracy"] == first["accuracy"]
  _, other = sample(sampling_seed=6)
  assert other != shown


@pytest.mark.full
def test_addition_samples_the_final_evaluation_only(tmp_path):
  results = addition.run(addition.AdditionConfig(
      workdir=str(tmp_path / "w"), epochs=1, training_size=2000,
      hidden_size=16, n_examples=0, log_every=0, sampling_temperature=1.0,
      top_k=2))
  assert results["decoder"] == {"name": "sampling", "temperature": 1.0,
                                "top_k": 2, "top_p": 1.0, "seed": 0}
  assert results["dev_decoder"] == {"name": "greedy"}
  assert 0 <= results["test_exact_match"] <= 1
