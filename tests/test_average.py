"""Checkpoint averaging (seqjax.averaging, experiments.average) against a
NumPy mean of the checkpoints' parameters read one by one."""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import average as average_bin
from experiments import translate
from seqjax import averaging
from seqjax import summary
from seqjax import translation
from tests import translate_util


def _train(tmp, name, **flags):
  path = translate_util.write_pairs(tmp / "pairs.txt",
                                    translate_util.toy_pairs(40))
  workdir = str(tmp / name)
  config = dict(data_path=path, workdir=workdir, num_samples=0,
                validation_split=0.25, latent_dim=8, batch_size=10, epochs=2,
                log_every=0, n_examples=0, num_buckets=1, progress="none",
                n_attention_plots=0)
  translate.run(translate.TranslateConfig(**{**config, **flags}))
  return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("runs")
  return {"a": _train(tmp, "a", epochs=3, keep_best_n=2),
          "small": _train(tmp, "small", latent_dim=6, epochs=1),
          "pairs": str(tmp / "pairs.txt")}


def _listing(root):
  """Every path under ``root`` with its size and mtime: any write shows."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return out


def _params(checkpoint_dir):
  state = ocp.StandardCheckpointer().restore(
      os.path.join(checkpoint_dir, "state"))
  return jax.tree.map(np.asarray, state["params"])


def _val_chrf_by_step(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["val_chrf"] for r in rows if "val_chrf" in r}


def test_average_of_the_last_two_is_their_numpy_mean(runs, tmp_path,
                                                     capsys):
  src, to = runs["a"], str(tmp_path / "avg")
  before = _listing(src)
  record = average_bin.run([src], to, last=2)
  assert _listing(src) == before  # the source is only read
  steps = [c["step"] for c in record["checkpoints"]]
  assert steps == [6, 9] and record["step"] == 9
  chrf = _val_chrf_by_step(src)
  assert [c["value"] for c in record["checkpoints"]] == [chrf[6], chrf[9]]
  one, two = (_params(os.path.join(src, "checkpoints", str(s)))
              for s in steps)
  got = jax.device_get(translation.load_translator(to).params)
  leaves = list(zip(jax.tree.leaves(one), jax.tree.leaves(two),
                    jax.tree.leaves(got)))
  assert len(leaves) == 8
  for a, b, g in leaves:
    np.testing.assert_allclose(g, (a.astype(np.float64) + b) / 2,
                               rtol=1e-6, atol=1e-7)
    assert not np.allclose(g, b)  # not the newest alone
  assert json.load(open(os.path.join(to, "results.json")))["checkpoints"] \
      == record["checkpoints"]
  # A normal model workdir: --eval_only evaluates the average.
  results = translate.run(translate.TranslateConfig(
      workdir=to, eval_only=True, data_path=runs["pairs"], progress="none",
      n_examples=0, n_attention_plots=0))
  assert results["step"] == 9 and results["val_chrf"] is not None
  # It says what it evaluates: the average, no selected epoch.
  what = "the average of 2 checkpoints (last 2: steps 6, 9)"
  assert results["evaluated"] == what
  out = capsys.readouterr().out
  assert f"Evaluating {what}: parameters sha256" in out
  assert "epoch None" not in out


def test_average_of_the_best_two_kept(runs, tmp_path):
  src, to = runs["a"], str(tmp_path / "best")
  record = average_bin.run([src], to, best=2)
  chrf = _val_chrf_by_step(src)
  ranked = sorted(chrf, key=lambda s: -chrf[s])
  assert len(ranked) == 3  # one epoch left out
  assert [c["step"] for c in record["checkpoints"]] == ranked[:2]
  assert [c["value"] for c in record["checkpoints"]] == [
      chrf[s] for s in ranked[:2]]
  kept = [_params(os.path.join(src, "best", str(s))) for s in ranked[:2]]
  got = jax.device_get(translation.load_translator(to).params)
  for a, b, g in zip(*map(jax.tree.leaves, kept), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, (a.astype(np.float64) + b) / 2,
                               rtol=1e-6, atol=1e-7)


def _refused(sources, to, match):
  listings = {s: _listing(s) for s in sources}
  with pytest.raises(averaging.AverageError, match=match):
    average_bin.run(sources, to, last=1)
  assert not os.path.exists(to)
  assert {s: _listing(s) for s in sources} == listings


def test_other_model_refused_naming_it_nothing_written(runs, tmp_path):
  small = os.path.join(runs["small"], "checkpoints", "3")
  _refused([runs["a"], runs["small"]], str(tmp_path / "x"),
           f"checkpoint {small} is another model's.*architecture.units")


def test_other_vocab_refused_naming_the_workdir(runs, tmp_path):
  other = str(tmp_path / "copy")
  shutil.copytree(runs["a"], other)
  with open(os.path.join(other, "vocab.json"), encoding="utf-8") as f:
    vocab = json.load(f)
  vocab["max_decode_len"] += 1
  with open(os.path.join(other, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(vocab, f)
  _refused([runs["a"], other], str(tmp_path / "x"),
           f"workdir {other}: its vocab.json differs")


def test_too_few_checkpoints_and_busy_destination_refused(runs, tmp_path):
  with pytest.raises(averaging.AverageError, match="fewer than the 4"):
    average_bin.run([runs["small"]], str(tmp_path / "x"), last=4)
  for inside in (runs["a"], os.path.join(runs["a"], "avg")):
    with pytest.raises(averaging.AverageError, match="source workdir"):
      average_bin.run([runs["a"]], inside, last=2)
  assert not os.path.exists(os.path.join(runs["a"], "avg"))
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "f").write_text("")
  with pytest.raises(averaging.AverageError, match="not empty"):
    average_bin.run([runs["a"]], str(busy), last=2)
  assert os.listdir(busy) == ["f"]


def test_flag_errors_name_the_flags():
  assert average_bin.flag_errors(["a"], "b", 2, 0) == []
  errors = average_bin.flag_errors([], "", 2, 3)
  assert len(errors) == 3 and "--from" in errors[0] and "--to" in errors[1]
  assert "--last=2 --best=3" in errors[2]


@pytest.mark.full
@pytest.mark.parametrize("scores,maximize,keep", [
    ([0.1, 0.5, 0.3, 0.4], True, 2),
    ([3.0, 1.0, 2.0, 0.5], False, 2),
    ([0.2, 0.1, 0.3, 0.4], True, 3),
])
def test_keep_best_n_keeps_the_states_of_the_n_best_epochs(
    tmp_path, scores, maximize, keep):
  from seqjax import runner
  from tests.test_selection import Scripted, _config
  task = Scripted(scores, maximize)
  runner.run(task, _config(tmp_path, keep_best_n=keep))
  ranked = sorted(range(1, 5), key=lambda e: scores[e - 1],
                  reverse=maximize)[:keep]
  workdir = tmp_path / "run"
  record = json.load(open(workdir / "best.json"))
  assert record["kept"] == [{"step": task.seen[e][0], "epoch": e,
                             "value": scores[e - 1]} for e in ranked]
  assert (record["step"], record["epoch"]) == (task.seen[ranked[0]][0],
                                               ranked[0])
  assert sorted(int(n) for n in os.listdir(workdir / "best")) == sorted(
      task.seen[e][0] for e in ranked)
  for e in ranked:  # each kept state is its epoch's
    params = _params(str(workdir / "best" / str(task.seen[e][0])))
    assert summary.params_fingerprint(params) == task.seen[e][1]
  assert task.evaluated == task.seen[ranked[0]][:2]  # the best is evaluated


@pytest.mark.full
def test_binary_exit_codes_and_messages(runs, tmp_path):
  import subprocess
  import sys
  def run(*flags):
    return subprocess.run([sys.executable, "-m", "experiments.average",
                           *flags], capture_output=True, text=True,
                          cwd=translate_util.ROOT, timeout=300)
  bad = run("--last=1")
  assert bad.returncode == 2 and "--from (a trained workdir)" in bad.stderr
  to = str(tmp_path / "x")
  mismatch = run(f"--from={runs['a']}", f"--from={runs['small']}",
                 f"--to={to}", "--last=1")
  assert mismatch.returncode == 2, mismatch.stderr
  assert "Error: checkpoint" in mismatch.stderr and "architecture.units" in \
      mismatch.stderr
  assert not os.path.exists(to)
  done = run(f"--from={runs['a']}", f"--to={to}", "--last=2")
  assert done.returncode == 0, done.stderr
  assert "Averaged 2 checkpoints" in done.stdout
  assert json.load(open(os.path.join(to, "average.json")))["step"] == 9
