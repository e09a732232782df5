"""The benchmark harness: registry, FLOP count, ratios, flags, a tiny run.

Speed itself is measured by ``python -m benchmarks.run``, never here; these
tests check that the harness measures what it says on tiny settings.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import harness
from benchmarks import reverse as reverse_bench
from benchmarks import run as bench_run
from seqjax.errors import SeqjaxError

# 60 training steps: three of fit's 25-step calls, so steady steps exist.
TINY = dict(units=8, train_samples=1920, decode_n=40, decode_batch=16,
            loop_n=3, ceiling_n=32)


def test_train_flops_per_sample_counted_by_hand():
  s = reverse_bench.Settings()
  # 9 recurrent matmuls (32-row batch aside) of 128 x 512, 3 readouts of
  # 128 x 51, 2 FLOPs per multiply-add, x3 for forward + backward.
  recurrent = 2 * 128 * 512
  readout = 2 * 128 * 51
  assert reverse_bench.train_flops_per_sample(s) == 3 * (9 * recurrent
                                                         + 3 * readout)


def _one_rep(**metrics):
  return {**metrics, "reps": {k: [v] for k, v in metrics.items()}}


def test_ratios_take_the_best_peer_and_respect_direction():
  results = {"seqjax": _one_rep(train_samples_per_s=300.0, first_step_s=0.5),
             "keras": _one_rep(train_samples_per_s=100.0, first_step_s=2.0),
             "torch": _one_rep(train_samples_per_s=200.0, first_step_s=1.0)}
  rows = harness.ratios(results, [
      ("train_samples_per_s", ("keras", "torch"), 2.0, False),
      ("first_step_s", ("keras", "torch"), 1.5, True),
      ("train_samples_per_s", ("jax2tf",), 1.0, False)])
  assert rows[0]["ratio"] == pytest.approx(1.5) and rows[0]["met"] is False
  assert rows[1]["ratio"] == pytest.approx(2.0) and rows[1]["met"] is True
  assert rows[2]["ratio"] is None  # no such peer measured


def test_ratios_pair_each_repetition_with_its_own_best_peer():
  # Per rep: 300 / max(100, 200) = 1.5, 100 / max(50, 40) = 2.0,
  # 120 / max(40, 100) = 1.2: median 1.5. The ratio of medians (120 over
  # max(50, 100)) would be 1.2, from numbers of different reps.
  rate = "train_samples_per_s"
  results = {fw: {rate: float(np.median(v)), "reps": {rate: v}}
             for fw, v in [("seqjax", [300.0, 100.0, 120.0]),
                           ("keras", [100.0, 50.0, 40.0]),
                           ("torch", [200.0, 40.0, 100.0])]}
  assert harness.rep_ratios(results, rate, ["keras", "torch"]) == [
      1.5, 2.0, 1.2]
  (row,) = harness.ratios(results, [(rate, ("keras", "torch"), 1.4, False)])
  assert row["ratio"] == 1.5 and row["range"] == [1.2, 2.0] and row["met"]
  assert row["ratio_of_medians"] == pytest.approx(1.2)
  # Lower is better: the best (least) peer's over ours, rep by rep.
  first = "first_step_s"
  for fw, v in [("seqjax", [1.0, 2.0]), ("keras", [3.0, 1.0]),
                ("torch", [2.0, 4.0])]:
    results[fw]["reps"][first] = v
  assert harness.rep_ratios(results, first, ["keras", "torch"], True) == [
      2.0, 0.5]


def test_median_ignores_missing_values():
  assert harness.median([3.0, None, 1.0, 2.0]) == 2.0
  assert np.isnan(harness.median([None]))


def test_bad_flags_are_named():
  config = bench_run.BenchmarkConfig(workload="sorting", peers="keras,mxnet",
                                     reps=0, loop_n=-1)
  errors = "\n".join(config.validate())
  for name in ("--workload", "--peers", "mxnet", "--reps", "--loop_n"):
    assert name in errors
  assert bench_run.BenchmarkConfig().validate() == []


def test_translate_says_what_it_still_needs(monkeypatch):
  monkeypatch.setitem(bench_run.WORKLOADS, "translate", (
      "benchmarks.translate_not_written", ("seqjax.data.no_such_module",),
      "the translate experiment"))
  with pytest.raises(SeqjaxError) as e:
    bench_run.load_workload("translate")
  message = str(e.value)
  assert "not available yet" in message
  assert "seqjax.data.no_such_module" in message and "reverse" in message


def test_every_real_workload_loads():
  for name in ("reverse", "translate", "attention", "decode"):
    module = bench_run.load_workload(name)
    assert module.NAME == name and hasattr(module, "Workload")


def test_missing_peer_packages_are_skipped_with_a_note(monkeypatch):
  monkeypatch.setitem(bench_run.PEER_PACKAGES, "keras", "no_such_keras_pkg")
  peers, notes = bench_run.select_peers(["keras"])
  assert peers == [] and "keras skipped" in notes[0]


def test_tiny_run_has_every_key_and_compiles_the_step_once(tmp_path):
  path = tmp_path / "bench.json"
  # single_thread: the one-thread worker set-up is exercised too.
  config = bench_run.BenchmarkConfig(peers="", reps=2, json=str(path),
                                     single_thread=True,
                                     train_samples=TINY["train_samples"],
                                     decode_n=TINY["decode_n"],
                                     decode_batch=TINY["decode_batch"],
                                     loop_n=TINY["loop_n"],
                                     ceiling_n=TINY["ceiling_n"])
  out = bench_run.run(config)
  on_disk = json.loads(path.read_text())
  assert on_disk["workloads"]["reverse"]["results"].keys() == {"seqjax"}
  res = on_disk["workloads"]["reverse"]["results"]["seqjax"]
  for key in harness.KEYS + ("versions",):
    assert key in res, key
  # A fresh step each rep, compiled once before the timed epoch, nothing
  # compiled inside it.
  assert res["reps"]["step_shapes_compiled"] == [1, 1]
  assert res["reps"]["step_compiles_in_fit"] == [0, 0]
  # fit's own setup may compile a scalar; nothing else compiles in it.
  assert all(c <= 1 for c in res["reps"]["train_compiles"])
  assert res["reps"]["threads"] == [1, 1]  # single_thread
  assert len(res["reps"]["decode_loop_split_seq_per_s"]) == 2
  assert all(v > 0 for v in res["reps"]["first_step_s"])
  flops = on_disk["workloads"]["reverse"]["train_flops_per_sample"]
  assert res["gflops"] == pytest.approx(
      res["train_samples_per_s"] * flops / 1e9)
  assert out["workloads"]["reverse"]["first_step_target"]["max_s"] == 1.0
  assert on_disk["workloads"]["reverse"]["single_thread"] is True
  assert harness.SINGLE_THREAD_XLA_FLAG in on_disk["machine"]["XLA_FLAGS"]
  assert len(on_disk["machine"]["cpu_affinity"]) == 1  # XLA's pool: one CPU


def test_seqjax_runner_decoders_agree():
  # The batched decoder, the per-sequence decoder and the tutorial's split
  # encoder / decoder-step loop are the same greedy decoding.
  w = reverse_bench.Workload(reverse_bench.Settings(
      **{k: v for k, v in TINY.items()}))
  r = w.runner("seqjax")
  src = w.decode_sources()[:6]
  batched = r.decode_batched(src)
  np.testing.assert_array_equal(r.decode_loop(src), batched)
  np.testing.assert_array_equal(r.decode_loop_split(src), batched)


def _peer_runner(name):
  if importlib.util.find_spec(bench_run.PEER_PACKAGES[name]) is None:
    pytest.skip(f"{name} is not installed (pip install -e '.[bench]')")
  w = reverse_bench.Workload(reverse_bench.Settings(
      **{**TINY, "units": 128, "train_samples": 64}))
  return w, w.runner(name)


@pytest.mark.full
def test_keras_peer_is_the_same_model():
  _, r = _peer_runner("keras")
  # The tutorial's model: exactly seqjax's parameter count (summary test).
  assert r.model.count_params() == 190_899


@pytest.mark.full
def test_torch_peer_is_the_same_model_and_trains():
  w, r = _peer_runner("torch")
  n = sum(p.numel() for p in r.model.parameters())
  # nn.LSTM keeps two bias vectors: 512 more per layer than Keras / seqjax.
  assert n == 190_899 + 2 * 512
  out = r.train_epoch(0)
  assert out["train_samples"] == 32 and out["train_compiles"] == 0
  tokens = r.decode_batched(w.decode_sources()[:5])
  np.testing.assert_array_equal(r.decode_loop(w.decode_sources()[:5]), tokens)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _binary(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_binaries_parse_their_flags_and_run():
  # Each benchmark binary hands common.main its config and run: a bad flag
  # is named (exit 2), and the report prints a committed run's tables.
  bad = _binary("benchmarks.run", "--workload=sorting")
  assert bad.returncode == 2, bad.stderr
  assert "Bad flags" in bad.stderr and "--workload" in bad.stderr
  run = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "runs",
                                      "*-*.json")))[0]
  report = _binary("benchmarks.report", f"--json={run}")
  assert report.returncode == 0, report.stderr
  assert "| train_samples_per_s |" in report.stdout
