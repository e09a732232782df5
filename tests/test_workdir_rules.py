"""What a translate run may leave in its workdir, what --eval_only reads from
it, and how a workdir of another task or without a model is named."""

import io
import json
import os
import subprocess
import sys

import pytest

from experiments import reverse
from experiments import translate
from seqjax import runner
from seqjax import translation
from seqjax.errors import SeqjaxError
from tests import translate_util

SCORES = ("loss", "token_accuracy", "exact_match", "bleu", "chrf")


def _binary(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": translate_util.ROOT}
  return subprocess.run([sys.executable, "-m", "experiments.translate", *args],
                        cwd=translate_util.ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def _files(workdir):
  return {f: open(os.path.join(workdir, f), "rb").read()
          for f in os.listdir(workdir)
          if os.path.isfile(os.path.join(workdir, f))
          and not f.startswith(".")}  # the lock names its holder


@pytest.fixture(scope="module")
def random_split_run(tmp_path_factory):
  """A tiny model trained on the random split: its workdir, results."""
  workdir = translate_util.train_tiny(
      tmp_path_factory.mktemp("random"), split="random", num_test=5,
      num_dev=5)
  return workdir, json.load(open(os.path.join(workdir, "results.json")))


def test_failed_eval_only_writes_nothing_and_training_follows(tmp_path):
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(SeqjaxError, match="no checkpoint"):
    translate.run(translate.TranslateConfig(
        workdir=str(empty), eval_only=True, data_path=path))
  assert os.listdir(empty) == []
  with pytest.raises(SeqjaxError, match="no checkpoint"):
    translate.run(translate.TranslateConfig(
        workdir=str(tmp_path / "none"), eval_only=True, data_path=path))
  assert not (tmp_path / "none").exists()
  # Training there on another split than the failed run's defaults goes.
  results = translate.run(translate.TranslateConfig(
      data_path=path, workdir=str(empty), num_samples=0, split="random",
      num_test=5, num_dev=5, latent_dim=8, batch_size=10, epochs=1,
      log_every=0, n_examples=0, num_buckets=1))
  assert results["n_train"] == 30


def test_failed_training_leaves_no_vocabulary_but_keeps_a_models(
    tmp_path, monkeypatch):
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  flags = dict(data_path=path, num_samples=0, validation_split=0.25,
               latent_dim=8, batch_size=10, epochs=1, log_every=0,
               n_examples=0, num_buckets=1)

  def fail(**kwargs):
    raise RuntimeError("failed before the first checkpoint")

  with monkeypatch.context() as m:
    m.setattr(runner, "train_or_restore", fail)
    with pytest.raises(RuntimeError):
      translate.run(translate.TranslateConfig(workdir=str(tmp_path / "w"),
                                              **flags))
  assert "vocab.json" not in os.listdir(tmp_path / "w")
  # A trained model's vocab.json and results stay when a later run fails.
  translate.run(translate.TranslateConfig(workdir=str(tmp_path / "w"),
                                          **flags))
  before = _files(tmp_path / "w")
  assert {"vocab.json", "results.json"} <= set(before)
  monkeypatch.setattr(runner, "train_or_restore", fail)
  with pytest.raises(RuntimeError):
    translate.run(translate.TranslateConfig(workdir=str(tmp_path / "w"),
                                            **{**flags, "epochs": 2}))
  assert _files(tmp_path / "w") == before


def test_eval_only_reads_the_recorded_settings(random_split_run):
  workdir, trained = random_split_run
  again = translate.run(translate.TranslateConfig(workdir=workdir,
                                                  eval_only=True))
  for held in ("test", "dev"):
    for score in SCORES:
      key = f"{held}_{score}"
      assert again[key] == pytest.approx(trained[key], rel=1e-6), key
  assert again["flags"]["latent_dim"] == 8
  assert again["flags"]["split"] == "random"


def test_eval_only_refuses_explicit_conflicting_flags(random_split_run):
  workdir, _ = random_split_run
  before = _files(workdir)
  with pytest.raises(SeqjaxError) as e:
    translate.run(translate.TranslateConfig(
        workdir=workdir, eval_only=True, latent_dim=16, num_test=7))
  assert "--latent_dim=16 (recorded: 8)" in str(e.value)
  assert "--num_test=7 (recorded: 5)" in str(e.value)
  # In the binary, a flag given at its default value is explicit too.
  done = _binary("--eval_only", f"--workdir={workdir}", "--latent_dim=256",
                 "--num_buckets=1")
  assert done.returncode == 2, done.stderr[-2000:]
  assert "--latent_dim=256 (recorded: 8)" in done.stderr
  assert "--num_buckets" not in done.stderr  # agrees with the record
  assert _files(workdir) == before


def test_another_tasks_workdir_is_named(tmp_path):
  workdir = str(tmp_path / "rev")
  reverse.run(reverse.ReverseConfig(
      workdir=workdir, n_samples=64, n_eval=8, n_units=8, batch_size=32,
      epochs=1, n_examples=0, log_every=0))
  for extra in (dict(translate=["Hi."]), dict(eval_only=True)):
    with pytest.raises(SeqjaxError) as e:
      translate.run(translate.TranslateConfig(workdir=workdir, **extra))
    assert "holds a 'reverse' model" in str(e.value)
    assert "no checkpoint" not in str(e.value)


def test_a_checkpoint_without_its_vocabulary_is_named(tmp_path):
  (tmp_path / "t").mkdir()
  workdir = translate_util.train_tiny(tmp_path / "t")
  os.remove(os.path.join(workdir, "vocab.json"))
  with pytest.raises(SeqjaxError, match="a checkpoint but no vocab.json"):
    translate.run(translate.TranslateConfig(workdir=workdir,
                                            translate=["Hi."]))


def test_stream_notes_go_to_the_error_stream(random_split_run):
  workdir, _ = random_split_run
  translator = translation.load_translator(workdir)
  width = translator.vocabs.max_source_len
  lines = ["dog 9é.", "", "cat 12. tea 34. sun 56."]
  out, err = io.StringIO(), io.StringIO()
  translate.translate_stream(translator, io.StringIO("\n".join(lines) + "\n"),
                             out, err)
  assert len(out.getvalue().split("\n")) == len(lines) + 1
  notes = err.getvalue().splitlines()
  dropped = "cat 12. tea 34. sun 56."[width:]
  assert notes == [
      "line 1: (translated with the unknown symbol in place of 'é': not in "
      "the training vocabulary)",
      f"line 3: (truncated to the first {width} chars, the longest training "
      f"source; dropped {dropped!r})"]


def test_loading_a_translator_runs_no_program(random_split_run, caplog):
  import logging
  import jax
  workdir, _ = random_split_run
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    translator = translation.load_translator(workdir)
  compiled = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("Compiling")]
  assert compiled == []
  # The parameters it restored translate as a fresh load's first call does.
  assert translator.translate(["cat 1."])[0].decoded == (
      translation.load_translator(workdir).translate(["cat 1."])[0].decoded)
