"""End to end: the reverse binary's run(), its flags and its workdir."""

import json
import os
import subprocess
import sys

import pytest

from experiments import reverse
from experiments import summary as summary_exp
from seqjax.checkpoint import CheckpointMismatchError
from seqjax.errors import SeqjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A runlocal-sized reverse task: learns in a few seconds.
TINY = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=48,
            n_samples=12_000, batch_size=32, n_eval=300, n_examples=2,
            log_every=100, learning_rate=0.01)


def test_small_reverse_run_learns_and_writes_results(tmp_path, capsys):
  cfg = reverse.ReverseConfig(workdir=str(tmp_path), **TINY)
  results = reverse.run(cfg)
  out = capsys.readouterr().out
  assert results["accuracy"] >= 0.97, results
  assert "Accuracy: " in out and "yhat=[" in out
  saved = json.load(open(tmp_path / "results.json"))
  for key in ("task", "accuracy", "token_accuracy", "train_seconds",
              "train_samples_per_second", "n_params", "flags", "versions"):
    assert key in saved
  assert saved["flags"]["n_units"] == 48 and saved["train_compiles"] == 1
  assert saved["step"] == 12_000 // 32
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert rows[-1]["step"] == 375 and rows[0]["loss"] > rows[-1]["loss"]

  # Same workdir again: resumes at the end, trains nothing, same accuracy.
  again = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path), **TINY))
  assert again["step"] == 375 and again["accuracy"] == results["accuracy"]
  # Eval-only restores and evaluates.
  ev = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path), eval_only=True,
                                         **TINY))
  assert ev["accuracy"] == results["accuracy"]

  # Another model on this workdir is refused and the checkpoint kept.
  ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
  with pytest.raises(CheckpointMismatchError, match="n_units"):
    reverse.run(reverse.ReverseConfig(workdir=str(tmp_path),
                                      **{**TINY, "n_units": 32}))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ckpts
  assert json.load(open(tmp_path / "results.json"))["accuracy"] == ev["accuracy"]


def test_same_seed_same_numbers(tmp_path):
  small = {**TINY, "n_samples": 2000, "n_eval": 50}
  a = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path / "a"), **small))
  b = reverse.run(reverse.ReverseConfig(workdir=str(tmp_path / "b"), **small))
  assert a["train_loss"] == b["train_loss"] and a["accuracy"] == b["accuracy"]


@pytest.mark.parametrize("flags,name", [
    ({"n_steps_out": 7}, "--n_steps_out"),
    ({"n_features": 2}, "--n_features"),
    ({"n_units": 0}, "--n_units"),
    ({"batch_size": 200_000}, "--batch_size"),
    ({"epochs": -1}, "--epochs"),
    ({"optimizer": "adagrad"}, "--optimizer"),
])
def test_bad_flags_are_named(flags, name, tmp_path):
  cfg = reverse.ReverseConfig(workdir=str(tmp_path / "w"), **flags)
  assert any(name in e for e in cfg.validate())
  with pytest.raises(SeqjaxError, match=name):
    reverse.run(cfg)
  assert not (tmp_path / "w").exists()  # stopped before any work


def test_eval_only_without_checkpoint(tmp_path):
  with pytest.raises(SeqjaxError, match=r"workdir=.*: holds no checkpoint "
                     r"to evaluate \(eval_only\)"):
    reverse.run(reverse.ReverseConfig(workdir=str(tmp_path), eval_only=True,
                                      **TINY))


def test_binary_reports_bad_flags_and_mismatch_without_traceback(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.reverse", "--n_steps_out=9",
       f"--workdir={tmp_path}/x"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert bad.returncode == 2
  assert "--n_steps_out=9 must not exceed --n_steps_in=6" in bad.stderr
  assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


def test_summary_binary_prints_keras_total():
  out = subprocess.run(
      [sys.executable, "-m", "experiments.summary", "--input_dim=28",
       "--units=128"], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr
  assert "Total params: 164,380" in out.stdout
  assert summary_exp.run(summary_exp.SummaryConfig(input_dim=5, units=3)) == (
      2 * 4 * (3 * (5 + 3) + 3) + 3 * 5 + 5)
