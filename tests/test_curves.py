"""Learning curves: what metrics.jsonl rows carry, and experiments.plot."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import plot
from experiments import reverse
from seqjax import runner
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.errors import SeqjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metrics_rows_carry_the_learning_curve_fields(tmp_path):
  config = reverse.ReverseConfig(
      workdir=str(tmp_path), n_features=9, n_steps_in=4, n_steps_out=2,
      n_units=16, batch_size=32, epochs=2, log_every=4, steps_per_call=4,
      n_samples=320, learning_rate=0.02)
  data = reverse_data.generate(np.random.default_rng(0), 320, 4, 2, 9)
  model = reverse.build_model(config)
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  evaluated = []

  def epoch_end_fn(state, epoch):
    evaluated.append((int(state.step), epoch))
    return {"accuracy": 0.25 * epoch}

  runner.train_or_restore(
      model=model, params=params, config=config, workdir=str(tmp_path),
      model_config=config.model_config(), data=data,
      loss_fn=train_lib.make_seq2seq_loss(model), epoch_end_fn=epoch_end_fn)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r for r in rows if not r.get("eval")]
  evals = [r for r in rows if r.get("eval")]
  # 10 steps an epoch, logged every 4 and at each epoch end.
  assert [r["step"] for r in train] == [4, 8, 10, 12, 16, 20]
  for r in train:
    for key in ("epoch", "loss", "token_accuracy", "samples_per_s", "wall_s",
                "time"):
      assert isinstance(r[key], float), (key, r)
    assert r["learning_rate"] == 0.02 and r["epoch"] == r["step"] / 10
  assert [r["wall_s"] for r in train] == sorted(r["wall_s"] for r in train)
  assert evaluated == [(10, 1), (20, 2)]
  assert [(r["step"], r["epoch"], r["accuracy"]) for r in evals] == [
      (10, 1, 0.25), (20, 2, 0.5)]
  assert all(r["wall_s"] > 0 for r in evals)


def test_default_learning_rate_is_logged():
  sgd = reverse.ReverseConfig(optimizer="sgd").fit_config()
  assert sgd.log_learning_rate == 1e-2
  assert reverse.ReverseConfig().fit_config().log_learning_rate == 1e-3


def _write_metrics(workdir, rows):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


TRAIN = [{"step": s, "epoch": s / 10, "loss": 2.0 / s, "token_accuracy": s / 40,
          "wall_s": s * 0.5} for s in (10, 20, 30)]
EVAL = [{"step": 10, "epoch": 1, "eval": True, "accuracy": 0.2},
        {"step": 30, "epoch": 3, "eval": True, "accuracy": 0.6}]


def test_collect_curves_reads_train_and_eval_rows(tmp_path):
  _write_metrics(tmp_path / "a", TRAIN + EVAL)
  _write_metrics(tmp_path / "b", TRAIN[:2])
  curves = plot.collect_curves([str(tmp_path / "a"), str(tmp_path / "b")])
  got = {(c.label, c.panel, c.evaluation): (c.xs, c.ys) for c in curves}
  assert got == {
      ("a train", "loss", False): ([10, 20, 30], [0.2, 0.1, 2.0 / 30]),
      ("a train token_accuracy", "accuracy", False): ([10, 20, 30],
                                                      [0.25, 0.5, 0.75]),
      ("a eval accuracy", "accuracy", True): ([10, 30], [0.2, 0.6]),
      ("b train", "loss", False): ([10, 20], [0.2, 0.1]),
      ("b train token_accuracy", "accuracy", False): ([10, 20], [0.25, 0.5]),
  }
  by_time = plot.collect_curves([str(tmp_path / "a")], x="wall_s")
  assert by_time[0].xs == [5.0, 10.0, 15.0]


def test_plot_writes_a_png(tmp_path):
  pytest.importorskip("matplotlib")
  _write_metrics(tmp_path / "a", TRAIN + EVAL)
  out = plot.plot_curves([str(tmp_path / "a")], str(tmp_path / "c.png"))
  data = open(out, "rb").read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_bad_input_is_named(tmp_path, monkeypatch):
  with pytest.raises(SeqjaxError, match="metrics.jsonl: no such file"):
    plot.collect_curves([str(tmp_path / "missing")])
  _write_metrics(tmp_path / "a", TRAIN)
  with open(tmp_path / "a" / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "loss": \n')
  with pytest.raises(SeqjaxError, match=r"metrics.jsonl:4: not a JSON"):
    plot.collect_curves([str(tmp_path / "a")])
  with pytest.raises(SeqjaxError, match="--x must be one of"):
    plot.collect_curves([str(tmp_path / "a")], x="hours")
  _write_metrics(tmp_path / "b", TRAIN)
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # "not installed"
  with pytest.raises(SeqjaxError, match=r"pip install 'seqjax\[plot\]'"):
    plot.plot_curves([str(tmp_path / "b")], str(tmp_path / "b.png"))
  assert not (tmp_path / "b.png").exists()


def test_plot_binary(tmp_path):
  pytest.importorskip("matplotlib")
  _write_metrics(tmp_path / "a", TRAIN + EVAL)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  ok = subprocess.run([sys.executable, "-m", "experiments.plot",
                       str(tmp_path / "a")], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert (tmp_path / "a" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  bad = subprocess.run([sys.executable, "-m", "experiments.plot",
                        str(tmp_path / "nope")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "no such file" in bad.stderr
  assert "Traceback" not in bad.stderr


DEV = [{"step": 10, "epoch": 1, "eval": True, "val_loss": 1.5,
        "dev_chrf": 20.5, "dev_bleu": 3.25, "val_token_accuracy": 0.4},
       {"step": 20, "epoch": 2, "eval": True, "val_loss": 1.25,
        "dev_chrf": 31.0, "dev_bleu": 7.5, "val_token_accuracy": 0.5}]


def _png_width(path):
  data = open(path, "rb").read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  return int.from_bytes(data[16:20], "big")


def test_a_torn_last_line_is_left_out(tmp_path):
  _write_metrics(tmp_path / "a", TRAIN)
  with open(tmp_path / "a" / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "loss": 0.')  # a run killed mid-write
  (loss, _) = plot.collect_curves([str(tmp_path / "a")])
  assert loss.xs == [10, 20, 30]


def test_dev_quality_and_val_loss_are_drawn_per_epoch(tmp_path):
  nonfinite = {"step": 25, "epoch": 2.5, "loss": 0.05,
               "nonfinite_loss": "nan", "nonfinite_skipped": 1}
  _write_metrics(tmp_path / "a", TRAIN[:2] + [nonfinite] + DEV)
  curves = plot.collect_curves([str(tmp_path / "a")], x="epoch")
  got = {(c.label, c.panel): (c.xs, c.ys) for c in curves if c.evaluation}
  assert got == {
      ("a eval dev_bleu", "quality"): ([1, 2], [3.25, 7.5]),
      ("a eval dev_chrf", "quality"): ([1, 2], [20.5, 31.0]),
      ("a eval val_loss", "loss"): ([1, 2], [1.5, 1.25]),
      ("a eval val_token_accuracy", "accuracy"): ([1, 2], [0.4, 0.5]),
  }
  train_loss = [c for c in curves if c.label == "a train"]
  assert [(c.xs, c.ys) for c in train_loss] == [([1, 2, 2.5], [0.2, 0.1, 0.05])]
  assert [plot.panel_of(k) for k in ("loss", "val_loss", "val_accuracy",
                                     "val_chrf", "bleu", "grad_norm")] == [
      "loss", "loss", "accuracy", "quality", "quality", None]
  pytest.importorskip("matplotlib")
  with_quality = plot.plot_curves([str(tmp_path / "a")],
                                  str(tmp_path / "q.png"))
  _write_metrics(tmp_path / "b", TRAIN + EVAL)
  without = plot.plot_curves([str(tmp_path / "b")], str(tmp_path / "n.png"))
  # A third panel (6 inches at 110 dpi) only when chrF/BLEU were logged.
  assert _png_width(with_quality) - _png_width(without) == 660


def test_sweep_runs_are_overlaid(tmp_path):
  sweep = tmp_path / "sweep"
  _write_metrics(sweep / "runs" / "n_units=64", TRAIN + DEV)
  _write_metrics(sweep / "runs" / "n_units=128", TRAIN[:1])
  os.makedirs(sweep / "runs" / "never_started")
  assert plot.sweep_workdirs(str(sweep)) == [
      str(sweep / "runs" / "n_units=128"), str(sweep / "runs" / "n_units=64")]
  with pytest.raises(SeqjaxError, match="no runs/\\*/metrics.jsonl"):
    plot.sweep_workdirs(str(tmp_path / "empty"))
  pytest.importorskip("matplotlib")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  ok = subprocess.run([sys.executable, "-m", "experiments.plot",
                       f"--sweep_dir={sweep}", "--x=epoch"], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert _png_width(sweep / "curves.png") == 3 * 660
  curves = plot.collect_curves(plot.sweep_workdirs(str(sweep)))
  assert {c.run for c in curves} == {0, 1}
  assert {c.label.split()[0] for c in curves} == {"n_units=128", "n_units=64"}
  bad = subprocess.run([sys.executable, "-m", "experiments.plot",
                        f"--sweep_dir={tmp_path / 'empty'}"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "no runs/*/metrics.jsonl" in bad.stderr
