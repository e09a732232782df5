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
