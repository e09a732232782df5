"""The addition binary: learning 1-digit addition, run(), flags, workdir."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import addition
from seqjax import decoding
from seqjax import models
from seqjax import train as train_lib
from seqjax.checkpoint import CheckpointMismatchError
from seqjax.data import addition as addition_data
from seqjax.errors import SeqjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 1-digit addition: the 55 distinct questions. A 64-unit model learns the
# whole table in about 30-40 epochs of batch 5 (about a second of training).
ONE_DIGIT = dict(digits=1, training_size=55, hidden_size=64, batch_size=5,
                 learning_rate=0.01, steps_per_call=11, log_every=0)


@pytest.mark.full
@pytest.mark.parametrize("model_name", models.MODEL_CHOICES)
def test_learns_one_digit_addition(model_name):
  cfg = addition.AdditionConfig(model=model_name, **ONE_DIGIT)
  data = addition_data.generate(np.random.default_rng(0), 55, 1, reverse=True)
  model = addition.build_model(cfg)
  params = models.init_params(model, jax.random.key(0), data["src"][:1],
                              data["dec_in"][:1])
  state = train_lib.create_train_state(
      model, params, train_lib.make_optimizer("adam", cfg.learning_rate))
  keys = ["src", "target"] + (["dec_in"] if model_name == "encoder_decoder"
                              else [])
  state, _ = train_lib.fit(state, {k: data[k] for k in keys},
                           train_lib.make_seq2seq_loss(model),
                           train_lib.FitConfig(batch_size=5, epochs=60,
                                               steps_per_call=11,
                                               log_every_steps=0))
  predict = decoding.make_decoder(model, max_len=2,
                                  start_id=addition_data.START_ID)
  guesses = addition_data.decode(predict(state.params, data["src"]))
  # Checked against Python's arithmetic on the question text itself.
  for question, guess in zip(addition_data.decode(data["src"]), guesses):
    a, b = question[::-1].split("+")
    assert guess == str(int(a) + int(b)).ljust(2), (question, guess)


def _check_printed_examples(out: str, epochs: int, n_examples: int):
  lines = re.findall(r"^Q (.+?) T (.+?) ([☑☒]) (.*)$", out, re.M)
  assert len(lines) == epochs * n_examples
  for question, answer, mark, guess in lines:
    a, b = question.strip().split("+")
    assert answer.strip() == str(int(a) + int(b))
    assert (mark == "☑") == (guess.strip() == answer.strip())


def test_small_run_writes_results_resumes_and_refuses_another_model(
    tmp_path, capsys):
  flags = dict(ONE_DIGIT, epochs=3, n_examples=4, model="encoder_decoder")
  results = addition.run(addition.AdditionConfig(workdir=str(tmp_path), **flags))
  out = capsys.readouterr().out
  # Four asked for, the 2 dev questions shown.
  _check_printed_examples(out, epochs=3, n_examples=2)
  assert len(re.findall(r"^Epoch \d: dev exact match", out, re.M)) == 3
  saved = json.load(open(tmp_path / "results.json"))
  for key in ("test_exact_match", "dev_exact_match", "train_accuracy",
              "history", "first_epoch_at_target", "train_seconds", "n_params",
              "flags", "selected_step", "selected_epoch", "select_value"):
    assert key in saved
  assert (saved["n_train"], saved["n_dev"], saved["n_test"]) == (50, 2, 3)
  assert saved["step"] == 3 * (50 // 5) and saved["train_compiles"] == 1
  assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
  # The handed-back model is the first epoch with the best dev exact match.
  dev = [h["dev_exact_match"] for h in saved["history"]]
  best = saved["history"][dev.index(max(dev))]
  assert (saved["selected_epoch"], saved["selected_step"]) == (
      best["epoch"], best["step"])
  assert saved["dev_exact_match"] == saved["select_value"] == max(dev)
  assert saved["select_metric"] == "dev_exact_match"
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert sum(r.get("eval", False) for r in rows) == 3

  # Same workdir: resumes at the end, trains nothing, same held-out numbers.
  again = addition.run(addition.AdditionConfig(workdir=str(tmp_path), **flags))
  assert again["step"] == 30 and again["history"] == []
  for key in ("test_exact_match", "dev_exact_match", "train_accuracy",
              "selected_step"):
    assert again[key] == results[key], key

  # The other model (or other data) on this workdir is refused, untouched.
  ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
  with pytest.raises(CheckpointMismatchError,
                     match="model: checkpoint 'encoder_decoder', now "
                     "'repeat_vector'"):
    addition.run(addition.AdditionConfig(
        workdir=str(tmp_path), **{**flags, "model": "repeat_vector"}))
  with pytest.raises(CheckpointMismatchError,
                     match="reverse: checkpoint True, now False"):
    addition.run(addition.AdditionConfig(workdir=str(tmp_path),
                                         **{**flags, "reverse": False}))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ckpts


@pytest.mark.parametrize("flags,message", [
    ({"digits": 0}, "--digits"),
    ({"digits": 19}, "--digits"),
    ({"digits": 1, "training_size": 56}, "--training_size=56 exceeds the 55"),
    ({"digits": 2, "training_size": 5051}, "--training_size=5051 exceeds"),
    ({"training_size": 19}, "--training_size must be >= 20"),
    ({"training_size": 100, "batch_size": 91}, "--batch_size=91"),
    ({"hidden_size": 0}, "--hidden_size"),
    ({"model": "attention"}, "--model"),
    ({"cell": "rnn"}, "--cell"),
    ({"target_accuracy": 1.5}, "--target_accuracy"),
    ({"epochs": 0}, "--epochs"),
])
def test_bad_flags_are_named(flags, message, tmp_path):
  cfg = addition.AdditionConfig(workdir=str(tmp_path / "w"), **flags)
  assert any(message in e for e in cfg.validate()), cfg.validate()
  with pytest.raises(SeqjaxError, match=re.escape(message)):
    addition.run(cfg)
  assert not (tmp_path / "w").exists()  # stopped before any work


def test_defaults_are_the_keras_example():
  cfg = addition.AdditionConfig()
  assert (cfg.digits, cfg.reverse, cfg.training_size, cfg.batch_size,
          cfg.hidden_size, cfg.model) == (3, True, 50_000, 32, 128,
                                          "repeat_vector")
  assert (cfg.n_train, cfg.n_dev, cfg.n_test) == (45_000, 2_500, 2_500)
  assert cfg.validate() == []


def test_binary_reports_bad_flags_without_traceback(tmp_path):
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.addition", "--digits=1",
       "--training_size=100", f"--workdir={tmp_path}/x"], cwd=ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
      text=True, timeout=120)
  assert bad.returncode == 2
  assert "--training_size=100 exceeds the 55 distinct questions" in bad.stderr
  assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()
