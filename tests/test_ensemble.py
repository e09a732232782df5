"""Ensemble decoding: an ensemble of one is its model, bit for bit; a step's
log-probabilities are the mean of the members' (computed one model at a
time, in NumPy); beam search over an ensemble finds the sequence an
exhaustive search of the averaged distribution ranks first; and the
translate binary's --ensemble."""

import functools
import itertools
import re

import jax
import numpy as np
import pytest

from seqjax import decoding
from seqjax.models import ModelSettings, Seq2Seq
from tests import seq2seq_reference as ref
from tests import tiers

START, STOP, PAD = 1, 2, 0
SRC_VOCAB, TGT_VOCAB = 7, 5
LENGTHS = np.array([5, 2, 4])

MEMBERS = {  # differ in architecture, share the vocabularies
    "plain": dict(units=6),
    "luong_bidirectional": dict(units=5, attention="luong",
                                bidirectional=True),
    "bahdanau_two_layers_gru": dict(units=4, cell="gru", embedding_dim=3,
                                    attention="bahdanau", decoder_layers=2),
}


@functools.partial(jax.jit, static_argnums=0, static_argnames="method")
def _apply(model, params, *args, method=None):
  """One model alone (jitted: the references call it many times)."""
  return model.apply(params, *args, method=method)


def _sources(seed=0, src_len=5):
  rng = np.random.default_rng(seed)
  src_BS = rng.integers(1, SRC_VOCAB, size=(len(LENGTHS), src_len)).astype(
      np.int32)
  return src_BS, np.arange(src_len)[None] < LENGTHS[:, None]


def _member(name, seed):
  model = Seq2Seq(src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB,
                  settings=ModelSettings(**MEMBERS[name]))
  src_BS, _ = _sources()
  return model, ref.random_params(model, src_BS[:1], src_BS[:1, :2], seed)


def _ensemble(names):
  members = [_member(n, seed) for seed, n in enumerate(names)]
  return (decoding.Ensemble(tuple(m for m, _ in members)),
          decoding.ensemble_params([p for _, p in members]), members)


def _decode(model, params, strategy, **kw):
  src_BS, mask_BS = _sources()
  fn = decoding.make_decoder(model, strategy, max_len=6, start_id=START,
                             stop_id=STOP, pad_id=PAD, full=True, **kw)
  return jax.device_get(fn(params, src_BS, mask_BS))


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", tiers.tiered(
    ["plain", "luong_bidirectional"], {1}, str))
def test_an_ensemble_of_one_decodes_as_its_model_bit_for_bit(name):
  model, params = _member(name, seed=3)
  ensemble = decoding.Ensemble((model,))
  both = ensemble, decoding.ensemble_params([params])
  greedy = [_decode(m, p, decoding.Greedy(), score=True)
            for m, p in ((model, params), both)]
  beams = [_decode(m, p, decoding.BeamSearch(3, 0.6, n_best=3))
           for m, p in ((model, params), both)]
  for alone, ensembled in (greedy, beams):
    for field in alone._fields:
      np.testing.assert_array_equal(getattr(ensembled, field),
                                    getattr(alone, field), err_msg=field)
  assert np.isfinite(beams[0].scores_BN).all()


def test_an_ensemble_of_one_samples_and_feeds_back_as_its_model():
  model, params = _member("plain", seed=4)
  both = decoding.Ensemble((model,)), decoding.ensemble_params([params])
  key = jax.random.key(7)
  for strategy, kw in ((decoding.Sampling(0.8, top_k=3), dict(key=key)),
                       (decoding.Greedy(), dict(feedback="softmax"))):
    src_BS, mask_BS = _sources()
    outs = [jax.device_get(decoding.decode(
        m, p, src_BS, mask_BS, kw.get("key"), strategy, max_len=6,
        start_id=START, stop_id=STOP, pad_id=PAD, score=True,
        feedback=kw.get("feedback", "tokens")))
            for m, p in ((model, params), both)]
    np.testing.assert_array_equal(outs[1].tokens_BT, outs[0].tokens_BT)
    np.testing.assert_array_equal(outs[1].log_probs_B, outs[0].log_probs_B)


def test_a_step_averages_the_members_log_probabilities():
  ensemble, params, members = _ensemble(list(MEMBERS))
  src_BS, mask_BS = _sources()
  tokens_TB = np.random.default_rng(1).integers(
      0, TGT_VOCAB, size=(4, len(src_BS))).astype(np.int32)
  state = _apply(ensemble, params, src_BS, mask_BS,
                 method="encode_for_decoding")
  alone = [_apply(m, p, src_BS, mask_BS, method="encode_for_decoding")
           for m, p in members]
  for token_B in tokens_TB:
    logits_BV, state = _apply(ensemble, params, token_B, state,
                              method="decode_step")
    logp_MBV = []
    for i, (m, p) in enumerate(members):
      member_logits_BV, alone[i] = _apply(m, p, token_B, alone[i],
                                          method="decode_step")
      logp_MBV.append(_log_softmax(member_logits_BV))
    mean_BV = np.mean(logp_MBV, axis=0)
    # The returned logits are the mean log-probabilities up to one constant
    # a row; normalised, the ensemble's distribution.
    shift_BV = np.asarray(logits_BV, np.float64) - mean_BV
    np.testing.assert_allclose(
        shift_BV, np.broadcast_to(shift_BV[:, :1], shift_BV.shape),
        atol=1e-5)
    np.testing.assert_allclose(_log_softmax(logits_BV),
                               _log_softmax(mean_BV), atol=1e-5)
    # Not the mean of the probabilities: the members disagree enough.
    arithmetic_BV = np.log(np.mean(np.exp(logp_MBV), axis=0))
    assert np.abs(_log_softmax(logits_BV) - arithmetic_BV).max() > 1e-3


def _ensemble_logp(members, src_BS, mask_BS, seqs):
  """log P(seq | src) under the ensemble for every (sentence, sequence):
  each member teacher-forced on the sequences one model at a time, its
  log-softmax averaged over members and renormalised at every step."""
  width = max(len(s) for s in seqs)
  out_YT = np.full((len(seqs), width), PAD, np.int32)
  for i, s in enumerate(seqs):
    out_YT[i, :len(s)] = s
  dec_in_YT = np.concatenate([np.full((len(seqs), 1), START, np.int32),
                              out_YT[:, :-1]], axis=1)
  batch, n = len(src_BS), len(seqs)
  src = np.repeat(src_BS, n, 0)  # row b * n + i: sentence b, sequence i
  mask = np.repeat(mask_BS, n, 0)
  dec_in = np.tile(dec_in_YT, (batch, 1))
  step_XTV = _log_softmax(np.mean(
      [_log_softmax(_apply(m, p, src, dec_in, mask)) for m, p in members],
      axis=0))
  logp_BY = np.zeros((batch, n))
  for b, i in itertools.product(range(batch), range(n)):
    logp_BY[b, i] = sum(step_XTV[b * n + i, t, tok]
                        for t, tok in enumerate(seqs[i]))
  return logp_BY


def test_beam_search_of_an_ensemble_finds_the_exhaustive_best():
  ensemble, params, members = _ensemble(list(MEMBERS))
  src_BS, mask_BS = _sources()
  max_len = 3
  symbols = [v for v in range(TGT_VOCAB) if v != STOP]
  seqs = [body + (STOP,) for n in range(max_len)
          for body in itertools.product(symbols, repeat=n)]
  seqs += list(itertools.product(symbols, repeat=max_len))  # cut at max_len
  want_BY = _ensemble_logp(members, src_BS, mask_BS, seqs)
  # As wide as every sequence: the search keeps them all.
  strategy = decoding.BeamSearch(len(seqs), n_best=4)
  fn = decoding.make_decoder(ensemble, strategy, max_len=max_len,
                             start_id=START, stop_id=STOP, pad_id=PAD,
                             full=True)
  got = jax.device_get(fn(params, src_BS, mask_BS))
  for b in range(len(src_BS)):
    best = np.argsort(-want_BY[b], kind="stable")[:4]
    np.testing.assert_allclose(got.log_probs_BN[b], want_BY[b][best],
                               atol=1e-4)
    found = [tuple(t[:n]) for t, n in zip(got.tokens_BNT[b],
                                          got.lengths_BN[b])]
    assert found[0] == seqs[best[0]]


def test_greedy_ensemble_follows_the_averaged_argmax():
  ensemble, params, members = _ensemble(["plain", "luong_bidirectional"])
  got = _decode(ensemble, params, decoding.Greedy(), score=True)
  src_BS, mask_BS = _sources()
  # A NumPy step loop: the decoders are causal, so a prefix padded to the
  # full width gives its next token's logits at its last position.
  max_len = got.tokens_BT.shape[1]
  prefix_B = [[] for _ in src_BS]
  logp_B = np.zeros(len(src_BS))
  for t in range(max_len):
    dec_in_BT = np.full((len(src_BS), max_len), PAD, np.int32)
    dec_in_BT[:, 0] = START
    for b, prefix in enumerate(prefix_B):
      dec_in_BT[b, 1:len(prefix) + 1] = prefix
    step_BV = np.mean([_log_softmax(_apply(m, p, src_BS, dec_in_BT, mask_BS))
                       [:, t] for m, p in members], axis=0)
    for b, prefix in enumerate(prefix_B):
      if len(prefix) == t and STOP not in prefix:
        prefix.append(int(np.argmax(step_BV[b])))
        logp_B[b] += _log_softmax(step_BV[b])[prefix[-1]]
  for b, prefix in enumerate(prefix_B):
    np.testing.assert_array_equal(got.tokens_BT[b, :len(prefix)], prefix)
    assert (got.tokens_BT[b, len(prefix):] == PAD).all()
  np.testing.assert_allclose(got.log_probs_B, logp_B, atol=1e-4)


def test_members_must_share_the_vocabularies():
  a = Seq2Seq(src_vocab=7, tgt_vocab=5, settings=ModelSettings(units=4))
  with pytest.raises(ValueError, match="tgt_vocab"):
    decoding.Ensemble((a, Seq2Seq(src_vocab=7, tgt_vocab=6,
                                  settings=ModelSettings(units=4))))
  with pytest.raises(ValueError, match="src_vocab"):
    decoding.Ensemble((a, Seq2Seq(src_vocab=8, tgt_vocab=5,
                                  settings=ModelSettings(units=4))))
  with pytest.raises(ValueError, match="at least one"):
    decoding.Ensemble(())


def test_member_params_round_trip():
  _, params, members = _ensemble(["plain", "luong_bidirectional"])
  for i, (_, p) in enumerate(members):
    got = decoding.member_params(params, i)
    assert jax.tree.structure(got) == jax.tree.structure(p)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
      assert x is y


# ------------------------------------------------------------ the binary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two tiny models of one vocabulary and data, of different shapes."""
  from tests import translate_util
  out = []
  for name, flags in (("a", {}), ("b", dict(embedding_dim=4, seed=1))):
    tmp = tmp_path_factory.mktemp(name)
    out.append(translate_util.train_tiny(tmp, **flags))
  return out


def _snapshot(*workdirs):
  """Every file under ``workdirs``: its bytes and modification time."""
  import os
  files = {}
  for top in workdirs:
    for root, _, names in os.walk(top):
      for name in names:
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          files[path] = (f.read(), os.stat(path).st_mtime_ns)
  return files


SENTENCES = ["dog 12.", "cat 99.", "tea 3."]


def test_translate_ensemble_equals_the_library_ensemble(trained):
  from experiments import translate
  from seqjax import translation
  got = translate.run(translate.TranslateConfig(
      workdir=trained[0], ensemble=trained[1], translate=SENTENCES))
  assert got["ensemble"] == trained
  # The ensemble built by hand from each model loaded alone.
  alone = [translation.load_translator(w) for w in trained]
  model = decoding.Ensemble(tuple(t.model for t in alone))
  params = decoding.ensemble_params([t.params for t in alone])
  vocabs = alone[0].vocabs
  src = translation.vocab_lib.encode_sources(vocabs.source, SENTENCES)
  fn = translation.make_decoder(alone[0].spec, model, vocabs.max_decode_len)
  tokens_BT = np.asarray(fn(params, src["src"], src["src_mask"]))
  assert [t["decoded"] for t in got["translations"]] == [
      vocabs.target.decode(row) for row in tokens_BT]


@pytest.mark.full
def test_eval_only_ensemble_of_a_model_with_itself_scores_as_the_model(
    trained, capsys):
  from experiments import translate
  flags = dict(workdir=trained[0], eval_only=True, n_examples=3)
  alone = translate.run(translate.TranslateConfig(**flags))
  # (x + x) / 2 == x in floating point: the same tokens, the same scores.
  twice = translate.run(translate.TranslateConfig(**flags,
                                                  ensemble=trained[0]))
  assert twice["ensemble"] == [trained[0]] * 2 and "ensemble" not in alone
  assert twice["examples"] == alone["examples"]
  assert twice["val_chrf"] == alone["val_chrf"]
  both = translate.run(translate.TranslateConfig(**flags,
                                                 ensemble=trained[1]))
  assert both["ensemble"] == trained
  from seqjax import translation
  inputs = [e["input"] for e in both["examples"]]
  assert [e["decoded"] for e in both["examples"]] == [
      t.decoded for t in translation.load_ensemble(trained).translate(inputs)]
  assert f"Decoded by the ensemble of {trained[0]} and {trained[1]}" in (
      capsys.readouterr().out)


def _mismatched(trained, tmp_path, edit):
  """A copy of the second model with its vocab.json edited by ``edit``."""
  import json
  import shutil
  copy = str(tmp_path / "edited")
  shutil.copytree(trained[1], copy)
  path = f"{copy}/vocab.json"
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  edit(saved)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f, ensure_ascii=False)
  return copy


def _longer(saved):
  saved["max_decode_len"] += 1


def _other_symbols(saved):
  saved["target"]["symbols"][-1] += "x"


@pytest.mark.parametrize("edit,problem", [
    (_longer, "decodes at most"), (_other_symbols, "target vocabulary")])
@pytest.mark.parametrize("mode", [dict(translate=SENTENCES),
                                  dict(eval_only=True)])
def test_a_mismatched_member_stops_before_any_work(trained, tmp_path, edit,
                                                   problem, mode):
  from experiments import translate
  from seqjax.errors import SeqjaxError
  member = _mismatched(trained, tmp_path, edit)
  before = _snapshot(trained[0], member)
  with pytest.raises(SeqjaxError) as e:
    translate.run(translate.TranslateConfig(
        workdir=trained[0], ensemble=f"{trained[1]},{member}", **mode))
  assert str(e.value).startswith(f"--ensemble={member}: ")
  assert problem in str(e.value) and trained[0] in str(e.value)
  assert _snapshot(trained[0], member) == before


def test_ensemble_needs_a_trained_model_to_decode(trained, tmp_path):
  from experiments import translate
  from seqjax.errors import SeqjaxError
  with pytest.raises(SeqjaxError, match=re.escape(
      f"--ensemble={tmp_path}: no checkpoint; a trained model is needed "
      "(--translate)")):
    translate.run(translate.TranslateConfig(
        workdir=trained[0], ensemble=str(tmp_path), translate=SENTENCES))
  errors = translate.TranslateConfig(workdir=trained[0],
                                     ensemble=trained[1]).validate()
  assert any(e.startswith("--ensemble needs --translate or --eval_only")
             for e in errors)


@pytest.mark.full
def test_eval_only_ensemble_loss_is_of_the_members_mean_probability(
    trained):
  from experiments import translate
  from seqjax import translation
  from seqjax.data import translation as data_lib
  from seqjax.training import losses
  config = translate.TranslateConfig(workdir=trained[0], eval_only=True,
                                     n_examples=0)
  alone = translate.run(config)
  both = translate.run(translate.TranslateConfig(
      workdir=trained[0], eval_only=True, n_examples=0, ensemble=trained[1]))
  # The reference: each model's token log-probabilities alone, mixed in
  # NumPy (float64), the mean over the real target tokens.
  setup = translate.TASK.setup(translate.recorded_config(config, set()),
                               trained[0])
  arrays = data_lib.fit_arrays(setup.data.data.held_out["val"].loss_arrays)
  logps = []
  for w in trained:
    t = translation.load_translator(w)
    logps.append(np.asarray(losses.make_token_log_probs(t.model)(
        t.params, arrays), np.float64))
  mixed_NT = np.log((np.exp(logps[0]) + np.exp(logps[1])) / 2)
  mask_NT = np.asarray(arrays["target_mask"])
  want = -mixed_NT[mask_NT].mean()
  np.testing.assert_allclose(both["val_loss"], want, rtol=1e-5)
  assert abs(alone["val_loss"] - want) > 1e-3  # not --workdir's alone
  np.testing.assert_allclose(alone["val_loss"], -logps[0][mask_NT].mean(),
                             rtol=1e-5)
