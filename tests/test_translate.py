"""The translate experiment: free-running decoder, variants, restore, data."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import translate
from seqjax import decoding
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer, CheckpointMismatchError
from seqjax.errors import SeqjaxError
from seqjax.models import ModelSettings, Seq2Seq
from tests import translate_util

# ------------------------------------------------- the free-running decoder

V, H, S, T, B = 11, 16, 5, 6, 4


def _model(emb=None, cell="lstm"):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, cell=cell,
                                         embedding_dim=emb))
  rng = np.random.default_rng(0)
  src = rng.integers(1, V, (B, S)).astype(np.int32)
  target = rng.integers(1, V, (B, T)).astype(np.int32)
  params = model.init(jax.random.key(0), src, target)
  return model, params, src, target


@pytest.mark.parametrize("emb", [None, 8])
def test_dense_step_of_a_one_hot_equals_the_token_step(emb):
  model, params, src, target = _model(emb)
  carry = jax.jit(model.apply, static_argnames="method")(
      params, src, method=Seq2Seq.encode)
  by_token = model.apply(params, target[:, 0], carry,
                         method=Seq2Seq.decode_step)
  by_vector = model.apply(params, jax.nn.one_hot(target[:, 0], V), carry,
                          method=Seq2Seq.decode_step_dense)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               by_token, by_vector)


@pytest.mark.parametrize("emb,cell", [(None, "lstm"), (8, "gru")])
def test_free_running_feeds_back_the_softmax(emb, cell):
  """The scan equals a Python loop that feeds each step's softmax back."""
  model, params, src, _ = _model(emb, cell)
  apply = jax.jit(model.apply, static_argnums=(2, 3),
                  static_argnames="method")
  logits = apply(params, src, T, 2, method=Seq2Seq.free_running)
  carry = apply(params, src, method=Seq2Seq.encode)
  x = jax.nn.one_hot(np.full(B, 2), V)
  for t in range(T):
    step_logits, carry = model.apply(params, x, carry,
                                     method=Seq2Seq.decode_step_dense)
    np.testing.assert_allclose(logits[:, t], step_logits, atol=1e-5)
    x = jax.nn.softmax(step_logits)
  # The decoder fed its softmax emits the argmax of those logits.
  tokens = decoding.decode(model, params, src, max_len=T, start_id=2,
                           feedback="softmax").tokens_BT
  np.testing.assert_array_equal(tokens, np.argmax(logits, -1))
  # Fed the argmax instead, it is greedy decoding.
  by_argmax = np.argmax(model.apply(params, src, T, 2, None, "argmax",
                                    method=Seq2Seq.free_running), -1)
  greedy = decoding.decode(model, params, src, max_len=T, start_id=2)
  np.testing.assert_array_equal(by_argmax, greedy.tokens_BT)


@pytest.mark.parametrize("feedback", ["softmax", "argmax"])
def test_free_running_loss_ignores_target_tokens(feedback):
  model, params, src, target = _model()
  rng = np.random.default_rng(1)
  batch = {"src": src, "target": target, "target_mask": target > 3,
           "dec_in": rng.integers(0, V, (B, T)).astype(np.int32)}
  other = {**batch, "dec_in": rng.integers(0, V, (B, T)).astype(np.int32)}
  free = jax.jit(train_lib.make_free_running_loss(model, start_id=2,
                                                  feedback=feedback))
  grad = jax.jit(jax.grad(lambda p, b: free(p, b)[0]))
  np.testing.assert_array_equal(free(params, batch)[0], free(params, other)[0])
  jax.tree.map(np.testing.assert_array_equal, grad(params, batch),
               grad(params, other))
  # The teacher-forced loss does read them (so this test can fail).
  forced = jax.jit(train_lib.make_seq2seq_loss(model))
  assert float(forced(params, batch)[0]) != float(forced(params, other)[0])


def test_free_running_decoder_pads_after_stop():
  model, params, src, _ = _model()
  stop = int(decoding.decode(model, params, src, max_len=T, start_id=2,
                             feedback="softmax").tokens_BT[0, 1])
  tokens = np.asarray(decoding.make_decoder(
      model, max_len=T, start_id=2, stop_id=stop, pad_id=0,
      feedback="softmax")(params, src))
  for row in tokens:
    hits = np.flatnonzero(row == stop)
    if len(hits):
      assert (row[hits[0] + 1:] == 0).all()
  assert (tokens[0, 2:] == 0).all() and tokens[0, 1] == stop


# -------------------------------------------------------------- end to end

# The toy pairs 8 times over; the last copy is the held-out split, so "held
# out" are the training pairs and a model that memorised them decodes all.
TOY = dict(num_samples=0, validation_split=0.125, latent_dim=64,
           batch_size=10, optimizer="adam", learning_rate=0.02, n_examples=2,
           log_every=0, epochs=6)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("toy") / "pairs.txt"
  return translate_util.write_pairs(path, translate_util.toy_pairs(50) * 8)


def test_memorises_50_pairs_and_restored_model_translates(toy_file, tmp_path,
                                                          capsys):
  workdir = str(tmp_path / "w")
  cfg = translate.TranslateConfig(data_path=toy_file, workdir=workdir, **TOY)
  results = translate.run(cfg)
  out = capsys.readouterr().out
  assert results["n_train"] == 350 and results["n_val"] == 50
  assert results["val_exact_match"] == 1.0, results["examples"]
  assert results["val_bleu"] == pytest.approx(100)
  assert results["val_chrf"] == pytest.approx(100)
  assert results["val_token_accuracy"] == 1.0
  assert "Input sentence: " in out and "Decoded sentence: " in out
  saved = json.load(open(os.path.join(workdir, "results.json")))
  for key in ("val_loss", "val_token_accuracy", "val_exact_match", "val_bleu",
              "val_chrf", "train_seconds", "train_samples_per_second",
              "epoch_seconds"):
    assert saved[key] is not None, key
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["val_loss"] for r in rows if r.get("eval")][-1] < (
      [r["val_loss"] for r in rows if r.get("eval")][0])
  vocab = json.load(open(os.path.join(workdir, "vocab.json")))
  assert vocab["target"]["symbols"][:4] == ["<pad>", "<unk>", "\t", "\n"]

  # --translate: the restored model, its saved vocabulary; an unknown
  # character is translated as the unknown symbol and reported.
  (en0, zh0), (en7, zh7) = translate_util.toy_pairs(8)[0::7]
  got = translate.run(translate.TranslateConfig(
      workdir=workdir, translate=[en7, en0, "cat 0é."]))["translations"]
  out = capsys.readouterr().out
  assert [g["decoded"] for g in got[:2]] == [zh7, zh0]
  assert got[2]["unknown"] == ["é"] and "'é'" in out and "unknown" in out

  # Another model on this workdir is refused; nothing is overwritten.
  before = {f: open(os.path.join(workdir, f), "rb").read()
            for f in ("vocab.json", "results.json")}
  with pytest.raises(CheckpointMismatchError, match="architecture.units"):
    translate.run(translate.TranslateConfig(
        data_path=toy_file, workdir=workdir, **{**TOY, "latent_dim": 32}))
  for f, content in before.items():
    assert open(os.path.join(workdir, f), "rb").read() == content


@pytest.mark.parametrize("variant", [
    dict(cell="gru"),
    dict(level="word", embedding_dim=16),
    dict(teacher_forcing=False),
])
@pytest.mark.full
def test_variants_train_and_decode(toy_file, tmp_path, variant):
  cfg = translate.TranslateConfig(data_path=toy_file, workdir=str(tmp_path),
                                  **{**TOY, "epochs": 4, **variant})
  results = translate.run(cfg)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  val = [r["val_loss"] for r in rows if r.get("eval")]
  assert val[-1] < 0.3 * val[0], val
  assert results["val_token_accuracy"] > 0.85
  assert results["val_chrf"] > 60 and results["val_exact_match"] > 0.4
  assert all(e["decoded"] for e in results["examples"])
  if variant.get("level") == "word":
    assert results["src_vocab"] == 2 + 5 + 50 + 1  # words, numbers, "."
  saved = Checkpointer(str(tmp_path), {}).saved_config()
  assert saved["teacher_forcing"] == variant.get("teacher_forcing", True)


@pytest.mark.full
def test_real_file_trains_briefly_and_decodes_held_out(tmp_path):
  path = translate_util.real_pair_file()
  if path is None:
    pytest.skip(translate_util.NO_REAL_FILE)
  cfg = translate.TranslateConfig(
      data_path=path, workdir=str(tmp_path), num_samples=400, latent_dim=32,
      batch_size=16, epochs=5, optimizer="adam", learning_rate=0.01,
      num_buckets=2, n_examples=3, log_every=0,
      keep_best=False)  # the last epoch's model: did training learn?
  results = translate.run(cfg)
  assert results["n_train"] == 320 and results["n_val"] == 80
  assert results["train_compiles"] == 2 and len(results["buckets"]) == 2
  assert np.isfinite(results["val_loss"]) and results["val_loss"] > 0
  for key in ("val_token_accuracy", "val_exact_match"):
    assert 0 <= results[key] <= 1
  for key in ("val_bleu", "val_chrf"):
    assert 0 <= results[key] <= 100
  assert results["val_token_accuracy"] > 0.05  # beyond chance (1/~300)
  # Beyond any model that ignores the source (always the end symbol, the
  # commonest character at each position): measured on the same split.
  data = translate.prepare_data(cfg)
  baseline = translate_util.position_mode_accuracy(data.train, data.val)
  assert results["val_token_accuracy"] > baseline + 0.02, baseline
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  val = [r["val_loss"] for r in rows if r.get("eval")]
  assert len(val) == 5 and min(val[1:]) < val[0] - 0.2, val
  decoded = [e["decoded"] for e in results["examples"]]
  assert len(decoded) == 3 and any(decoded)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("flags,name", [
    (dict(level="word"), "--embedding_dim"),
    (dict(validation_split=1.0), "--validation_split"),
    (dict(level="byte"), "--level"),
    (dict(feedback="sample"), "--feedback"),
    (dict(translate=["Hi."]), "--translate needs --workdir"),
    (dict(num_buckets=0), "--num_buckets"),
])
def test_bad_flags_are_named(flags, name, tmp_path):
  cfg = translate.TranslateConfig(**flags)
  assert any(name in e for e in cfg.validate())
  with pytest.raises(SeqjaxError, match=name):
    translate.run(cfg)


def test_batch_larger_than_training_split(toy_file, tmp_path):
  with pytest.raises(SeqjaxError, match="--batch_size=400"):
    translate.run(translate.TranslateConfig(
        data_path=toy_file, workdir=str(tmp_path / "w"), batch_size=400))
  assert not (tmp_path / "w").exists()


def test_translate_without_a_model(tmp_path):
  with pytest.raises(SeqjaxError, match=r"a trained model is needed \(--translate\)"):
    translate.run(translate.TranslateConfig(workdir=str(tmp_path),
                                            translate=["Hi."]))


def test_binary_missing_file_says_how_to_get_it(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop(translate.ENV_VAR, None)
  out = subprocess.run(
      [sys.executable, "-m", "experiments.translate",
       f"--data_path={tmp_path}/missing.txt", f"--workdir={tmp_path}/w"],
      cwd=translate_util.ROOT, env=env, capture_output=True, text=True,
      timeout=120)
  assert out.returncode == 2
  assert (f"--data_path={tmp_path}/missing.txt: no pair file at "
          f"{tmp_path}/missing.txt (from --data_path)") in out.stderr
  assert "manythings.org/anki" in out.stderr and "SEQJAX_CMN_PATH" in out.stderr
  assert "Traceback" not in out.stderr and not (tmp_path / "w").exists()
