"""RESULTS.md's tables come from committed run files: ``python -m
benchmarks.report --json=benchmarks/runs/<run>.json`` reprints them."""

import glob
import json
import os

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runs():
  for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "runs",
                                            "*.json"))):
    with open(path, encoding="utf-8") as f:
      out = json.load(f)
    if "workloads" in out:  # a benchmarks.run file
      yield os.path.relpath(path, ROOT), out


# The latest run of each workload is in RESULTS.md, the runs it superseded
# in the history.
RESULTS_DOCS = ("benchmarks/RESULTS.md", "docs/results_history.md")


def test_results_md_tables_are_the_committed_runs_reports():
  docs = {}
  for name in RESULTS_DOCS:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
      docs[name] = f.read()
  runs = list(_runs())
  assert runs, "no run JSON committed in benchmarks/runs/"
  for path, out in runs:
    citing = [name for name, text in docs.items() if path in text]
    assert citing, f"{path} is cited in none of {RESULTS_DOCS}"
    results = "\n".join(docs[name] for name in citing)
    table = [l for l in report.markdown(out).splitlines()
             if l.startswith("| ") or l.startswith("- train")
             or l.startswith("- decode")]
    missing = [l for l in table if l not in results]
    assert not missing, (path, missing)
