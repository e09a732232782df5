"""The compile_flags workload's bookkeeping: medians, per-repetition ratios
to XLA's defaults, its table, and the variants it names."""

import pytest

from benchmarks import compile_flags
from seqjax import compile_cache
from tests import conftest


def _row(first_step, rate, sha):
  return {"attention_first_step_s": first_step,
          "attention_samples_per_s": rate, "reverse_sha256": sha,
          "reverse_accuracy": 99.6}


def test_summary_is_medians_and_the_median_ratio_per_repetition():
  base = [_row(40.0, 200.0, "a"), _row(50.0, 100.0, "a"),
          _row(30.0, 300.0, "a")]
  rows = [_row(10.0, 220.0, "b"), _row(20.0, 90.0, "c"),
          _row(12.0, 240.0, "b")]
  out = compile_flags._summary(rows, base)
  assert out["attention_first_step_s"] == 12.0
  assert out["attention_samples_per_s"] == 220.0
  # Ratios 10/40, 20/50, 12/30 -> median 0.4; 1.1, 0.9, 0.8 -> 0.9.
  assert out["attention_first_step_s_vs_xla_default"] == pytest.approx(0.4)
  assert out["attention_samples_per_s_vs_xla_default"] == pytest.approx(0.9)
  assert out["reverse_sha256"] == ["b", "c"]
  assert out["reverse_accuracy"] == [99.6]
  out["flags"] = "--x"
  line = compile_flags.format_markdown({"v": out}).splitlines()[-1]
  assert line.startswith("| v | `--x` | 12.0 (0.40x) | 220.0 (0.90x) |")


def test_variants_are_the_binaries_and_the_tests_flags():
  assert compile_flags.VARIANTS["binaries"] == ""  # the binaries add theirs
  assert compile_cache.CPU_FLAGS == ("--xla_backend_optimization_level=1",)
  assert compile_flags.VARIANTS["tests"] == conftest.DEFAULT_TEST_XLA_FLAGS
  with pytest.raises(ValueError, match="nope"):
    compile_flags.measure(compile_flags.Settings(variants="binaries+nope"), 1)
