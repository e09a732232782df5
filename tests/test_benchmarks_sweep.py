"""The sweep benchmark workload on a tiny setting: it runs, both sides
train every run for the same steps, and its JSON and tables have their
keys. Speed is measured by ``python -m benchmarks.run --workload=sweep``,
never here."""

import json

import pytest

from benchmarks import report
from benchmarks import run as bench_run
from benchmarks import sweep as sweep_bench


@pytest.mark.full
def test_tiny_sweep_benchmark_end_to_end(tmp_path):
  path = tmp_path / "bench.json"
  config = bench_run.BenchmarkConfig(
      workload="sweep", peers="", reps=1, json=str(path), train_samples=320,
      settings="units=16,members=2,more=4,steps_per_call=2")
  out = bench_run.run(config)
  on_disk = json.loads(path.read_text())
  work = on_disk["workloads"]["sweep"]
  assert work["settings"]["members"] == 2
  res = work["results"]
  assert res["sequential"]["runs"] == 2
  assert sorted(res["vectorized"]) == ["2", "4"]
  for n, vec in res["vectorized"].items():
    assert vec["runs"] == int(n) and vec["compiles"] == 1
    assert vec["samples_per_s"] > 0 and vec["steady_samples_per_s"] > 0
    assert vec["memory"]["total_bytes"] > vec["memory"]["data_bytes"] > 0
  # Memory grows with the members.
  assert (res["vectorized"]["4"]["memory"]["total_bytes"] >
          res["vectorized"]["2"]["memory"]["total_bytes"])
  assert set(res["speedup"]) == {"total", "steady", "target", "met"}
  md = report.markdown(out)
  assert "| vectorized | 4 |" in md and "train speedup at 2 members" in md
  assert "one after another" in work["table"]


def test_sizes_setting():
  assert sweep_bench.sizes(sweep_bench.Settings(more="16;32")) == [16, 32]
  assert sweep_bench.sizes(sweep_bench.Settings(more="")) == []
