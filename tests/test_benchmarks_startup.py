"""The startup benchmark workload on tiny settings: every row runs as a
fresh process cold and warm, its JSON has its keys, and a warm run compiles
fewer programs than the cold one. Speed is measured by
``python -m benchmarks.run --workload=startup``, never here."""

import json
import time

import pytest

from benchmarks import report
from benchmarks import run as bench_run
from benchmarks import startup
from tests import translate_util

# Small models: the flags override the attention flag file's.
TINY = ("reverse_samples=320,reverse_flags=--n_units=8 --n_eval=20 "
        "--steps_per_call=5,attention_samples=0,num_test=10,num_dev=10,"
        "attention_flags=--latent_dim=8 --embedding_dim=4 --num_buckets=2 "
        "--steps_per_call=5")


@pytest.mark.full
def test_tiny_startup_benchmark_end_to_end(tmp_path):
  pairs = translate_util.write_pairs(tmp_path / "pairs.txt",
                                     translate_util.toy_pairs(120))
  path = tmp_path / "bench.json"
  config = bench_run.BenchmarkConfig(
      workload="startup", peers="", reps=1, json=str(path),
      data_path=str(pairs), settings=TINY)
  t0 = time.time()
  out = bench_run.run(config)
  elapsed = time.time() - t0
  work = json.loads(path.read_text())["workloads"]["startup"]
  res = work["results"]
  assert sorted(res) == ["attention", "reverse", "translate"]  # no peers
  for row in ("reverse", "attention", "translate"):
    cold, warm = res[row]["cold"], res[row]["warm"]
    for run in (cold, warm):
      assert 0 < run["wall_s"] < elapsed
      assert run["compile_s"] >= 0 and run["cache_read_s"] >= 0
    # An empty cache reads nothing back; the same programs again are read
    # back, not compiled (slack: a small program the cache may miss).
    assert cold["cache_hits"] == 0 and cold["programs_compiled"] > 0
    assert warm["cache_hits"] > 0
    assert warm["programs_compiled"] < cold["programs_compiled"]
    assert warm["programs_compiled"] <= 2
  for row in ("reverse", "attention"):
    for phase in ("cold", "warm"):
      run = res[row][phase]
      assert 0 < run["first_step_s"] < run["wall_s"]
  assert res["translate"]["cold"]["first_step_s"] is None
  assert res["translate"]["output"]
  assert "attention" in work["table"] and "| translate |" in work["markdown"]
  assert "avx512" in out["machine"] and out["machine"]["cpu"]
  assert "| reverse |" in report.markdown(out)


def _absl_line(level, t, text):
  """An absl log line stamped at epoch seconds ``t`` (local time)."""
  lt = time.localtime(t)
  micros = round((t - int(t)) * 1e6)
  return (f"{level}{lt.tm_mon:02d}{lt.tm_mday:02d} {lt.tm_hour:02d}:"
          f"{lt.tm_min:02d}:{lt.tm_sec:02d}.{micros:06d} 1234 f.py:1] {text}")


def test_parse_compiles_pairs_hits_with_their_programs():
  # (program, seconds, read from the cache?) in the order JAX logs them.
  programs = [("init", 2.5, False), ("train_call_0", 9.0, True),
              ("convert_element_type", 0.25, False),
              ("convert_element_type", 0.125, True), ("run", 1.5, True)]
  lines = ["I1207 05:30:59.312210 1 loop.py:173] Training 7 steps"]
  for name, secs, hit in programs:
    if hit:
      lines.append(_absl_line("W", 0.0, "Persistent compilation cache hit "
                              f"for 'jit_{name}' with key 'jit_{name}-ab12'"))
    lines.append(_absl_line("W", 0.0, f"Finished XLA compilation of "
                            f"jit({name}) in {secs} sec"))
  got = startup.parse_compiles("\n".join(lines))
  assert got["programs_compiled"] == sum(not h for _, _, h in programs)
  assert got["cache_hits"] == sum(h for _, _, h in programs)
  assert got["log_compile_s"] == pytest.approx(
      sum(s for _, s, h in programs if not h))
  assert got["cache_read_s"] == pytest.approx(
      sum(s for _, s, h in programs if h))


def test_training_start_reads_the_absl_timestamp():
  t = time.time() - 1000.25
  stderr = "\n".join([_absl_line("W", t - 5, "Finished XLA compilation of "
                                 "jit(init) in 1.0 sec"),
                      _absl_line("I", t, "Training 100 steps (100 per "
                                 "epoch, batch 32) from step 0."),
                      _absl_line("I", t + 9, "Training 3 steps")])
  assert startup.training_start(stderr, time.time()) == pytest.approx(
      t, abs=1e-5)
  assert startup.training_start("no log", time.time()) is None
