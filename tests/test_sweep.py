"""The task registry and the sweep runner: grid syntax, bad input stopping
before any run, ranking, failures recorded, skip / resume on a rerun."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from experiments import registry
from experiments import reverse
from experiments import sweep
from experiments import sweep_plan
from experiments import sweep_report
from experiments import sweep_runs
from seqjax import task as task_lib
from seqjax.errors import SeqjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A task in its own module outside experiments/ (a dotted --task): no JAX
# work, so its sweeps take a second. x=2 fails at run time.
FAKE_TASK = textwrap.dedent('''
    import dataclasses, os
    from seqjax import config, runner, task
    from seqjax.config import field

    @dataclasses.dataclass
    class FakeConfig(config.TrainingConfig):
      x: int = field(1, "x", low=0)
      name: str = field("a", "name")

    class FakeTask(task.Task):
      name, config_cls, metric = "sweepfake.task", FakeConfig, "accuracy"

      def run(self, config):
        runner.check(config)
        workdir = runner.resolve_workdir(config, "fake")
        if config.x == 2:
          raise RuntimeError(f"boom at x={config.x}")
        results = {"flags": dataclasses.asdict(config),
                   "accuracy": config.x / 10,
                   "train_samples_per_second": 100.0 / config.x,
                   "train_seconds": float(config.x), "step": 7}
        runner.write_results(workdir, results)
        return results

    TASK = task.register(FakeTask())
''')


@pytest.fixture(scope="module")
def fake_task_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("mods")
  (root / "sweepfake").mkdir()
  (root / "sweepfake" / "__init__.py").write_text("")
  (root / "sweepfake" / "task.py").write_text(FAKE_TASK)
  return root


@pytest.fixture
def fake_task(fake_task_dir, monkeypatch):
  monkeypatch.syspath_prepend(str(fake_task_dir))
  monkeypatch.setenv("PYTHONPATH", str(fake_task_dir))  # for subprocesses
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  return "sweepfake.task"


def test_parse_grid():
  assert sweep_plan.parse_grid(" a=1,2  b=x\n c=1e-3 ") == [
      ("a", ["1", "2"]), ("b", ["x"]), ("c", ["1e-3"])]
  assert sweep_plan.parse_grid("") == []


@pytest.mark.parametrize("grid,match", [
    ("n_units", "'n_units' is not flag=value"),
    ("=3", "'=3' is not flag=value"),
    ("n_units=", "empty value"),
    ("n_units=1,,2", "empty value"),
    ("n_units=1 n_units=2", "n_units is given twice"),
    ("9x=1", "'9x' in '9x=1' is not a flag name"),
])
def test_malformed_grids_are_named(grid, match):
  with pytest.raises(SeqjaxError, match=re.escape(match)):
    sweep_plan.parse_grid(grid)


@pytest.mark.parametrize("task,grid,match", [
    ("reverse", "n_units=16 n_layers=2,3", "n_layers: not flag(s) of task "
     "reverse"),
    ("reverse", "n_units=16,abc", "n_units='abc' is not a valid int"),
    ("reverse", "learning_rate=0.1,none,x", "learning_rate='x' is not a "
     "valid float"),
    ("reverse", "eval_only=maybe", "eval_only='maybe' is not a valid bool"),
    ("reverse", "workdir=a,b", "workdir is set by the sweep"),
    ("reverse", "num_processes=2", "num_processes is set by the sweep"),
    ("reverse", "n_units=16,16", "n_units repeats a value"),
    ("nosuchtask", "n_units=1", "--task=nosuchtask: unknown task "
     "'nosuchtask'; known tasks: "),
    ("summary", "units=3", "--task=summary: unknown task 'summary'"),
    ("experiments.summary", "units=3", "experiments.summary defines no TASK"),
    ("reverse", "num_devices=1,10000", "--num_devices=10000 but only"),
    ("reverse", "n_steps_out=3,9", "--n_steps_out=9 must not exceed "
     "--n_steps_in=6 (run n_steps_out=9)"),
])
def test_bad_sweeps_stop_before_any_run(task, grid, match, tmp_path):
  with pytest.raises(SeqjaxError, match=re.escape(match)):
    sweep.plan_sweep(task, grid, str(tmp_path / "sweep"))
  assert not (tmp_path / "sweep").exists()


def test_grid_values_typed_and_expanded_in_order(tmp_path):
  plan = sweep.plan_sweep(
      "reverse", "n_units=64,128 batch_size=32,256 learning_rate=none,1e-3 "
      "cell=gru eval_only=false", str(tmp_path))
  assert len(plan.runs) == 8
  first, last = plan.runs[0], plan.runs[-1]
  assert first.assignment == {"n_units": 64, "batch_size": 32,
                              "learning_rate": None, "cell": "gru",
                              "eval_only": False}
  assert last.assignment["n_units"] == 128 and last.assignment[
      "learning_rate"] == 1e-3
  assert isinstance(first.config, reverse.ReverseConfig)
  assert first.name == "n_units=64,batch_size=32,learning_rate=None"
  assert last.workdir == os.path.join(
      str(tmp_path), "runs", "n_units=128,batch_size=256,learning_rate=0.001")
  assert len({r.workdir for r in plan.runs}) == 8
  assert not os.listdir(tmp_path)  # planning writes nothing


def test_registry_finds_builtin_and_registered_tasks():
  task = registry.get("reverse")
  assert task.config_cls is reverse.ReverseConfig and task is reverse.TASK
  assert task.metric == "accuracy" and task.maximize
  assert "reverse" in registry.known_tasks()
  assert "summary" not in registry.known_tasks()
  with pytest.raises(SeqjaxError, match="not a task name"):
    registry.get("../etc")
  with pytest.raises(SeqjaxError, match="unknown task 'nosuch'"):
    registry.get("nosuch")

  class Alias(task_lib.Task):
    name, config_cls = "reverse_alias", reverse.ReverseConfig
  alias = task_lib.register(Alias())
  try:
    assert registry.get("reverse_alias") is alias
    with pytest.raises(SeqjaxError, match="bogus: not flags of task"):
      registry.config_from_dict(alias, {"bogus": 1})
  finally:
    task_lib._REGISTERED.pop("reverse_alias")


def test_rank_follows_the_declared_metric_and_direction():
  rows = [{"run": n, "status": st, "loss": v, "samples_per_s": sps}
          for n, st, v, sps in [("a", "done", 0.5, 1.0), ("b", "done", 0.2, 1.0),
                                ("c", "failed", None, None),
                                ("d", "done", None, 9.0), ("e", "done", 0.2, 5.0)]]
  assert [r["run"] for r in sweep_report.rank(rows, "loss", maximize=False)] == [
      "e", "b", "a", "d", "c"]
  assert [r["run"] for r in sweep_report.rank(rows, "loss", maximize=True)] == [
      "a", "e", "b", "d", "c"]


@pytest.mark.parametrize("isolate", [True, False])
def test_failing_run_is_recorded_and_the_others_go_on(fake_task, tmp_path,
                                                      isolate):
  plan = sweep.plan_sweep(fake_task, "x=1,2,3 name=a", str(tmp_path / "s"),
                          validate_in_subprocess=isolate)
  log = []
  rows = sweep.run_sweep(plan, isolate=isolate, log=log.append)
  assert [r["status"] for r in rows] == ["done", "failed", "done"]
  assert rows[1]["error"] == "RuntimeError: boom at x=2"
  ranked = list(csv.DictReader(open(tmp_path / "s" / "sweep.csv")))
  assert [r["run"] for r in ranked] == ["x=3", "x=1", "x=2"]
  assert [r["rank"] for r in ranked] == ["1", "2", "3"]
  assert ranked[2]["status"] == "failed" and "boom" in ranked[2]["error"]
  md = open(tmp_path / "s" / "sweep.md").read()
  assert "3 runs; 2 done, 1 failed" in md and "## Failed" in md
  assert md.index("| 1 | x=3 |") < md.index("| 2 | x=1 |")

  # Rerun: the finished runs are skipped, the failed one is tried again.
  log.clear()
  rows = sweep.run_sweep(plan, isolate=isolate, log=log.append)
  assert [r["status"] for r in rows] == ["done", "failed", "done"]
  assert log[0] == "[1/3] x=1: finished earlier, skipped"
  assert log[1].startswith("[2/3] x=2: running in ")
  assert log[-1] == "[3/3] x=3: finished earlier, skipped"
  if isolate:
    assert open(tmp_path / "s" / "runs" / "x=2" / "log.txt").read().count(
        sweep_runs.ATTEMPT) == 2


def test_reverse_sweep_ranks_skips_and_resumes(tmp_path, capsys):
  # In process (the subprocess path is tested with the fake task above).
  tiny = ("n_features=9 n_steps_in=4 n_steps_out=2 n_samples=640 "
          "batch_size=32 n_eval=64 n_examples=0 learning_rate=0.01 "
          "checkpoint_every=10")
  sweep_dir = tmp_path / "sweep"
  plan = sweep.plan_sweep("reverse", f"n_units=8,24 {tiny}", str(sweep_dir))
  log = []
  rows = sweep.run_sweep(plan, isolate=False, log=log.append)
  assert [r["status"] for r in rows] == ["done", "done"], rows
  fingerprint = _fingerprints(capsys.readouterr().out)
  assert len(fingerprint) == 2
  ranked = list(csv.DictReader(open(sweep_dir / "sweep.csv")))
  assert {r["run"] for r in ranked} == {"n_units=8", "n_units=24"}
  accuracies = [float(r["accuracy"]) for r in ranked]
  assert accuracies == sorted(accuracies, reverse=True)
  assert all(float(r["samples_per_s"]) > 0 and r["steps"] == "20"
             for r in ranked)
  for r in ranked:
    results = json.load(open(os.path.join(r["workdir"], "results.json")))
    assert results["accuracy"] == float(r["accuracy"])
    assert results["flags"]["n_units"] == int(r["n_units"])
  if _has_matplotlib():
    assert (sweep_dir / "sweep.png").read_bytes()[:4] == b"\x89PNG"

  # Make n_units=24 half-finished: no results, latest checkpoint at step 10.
  run24 = sweep_dir / "runs" / "n_units=24"
  os.unlink(run24 / "results.json")
  shutil.rmtree(run24 / "checkpoints" / "20")
  log.clear()
  rows = sweep.run_sweep(plan, isolate=False, log=log.append)
  assert [r["status"] for r in rows] == ["done", "done"], rows
  assert log[0] == "[1/2] n_units=8: finished earlier, skipped"
  assert log[1] == f"[2/2] n_units=24: resuming in {run24}"
  out = capsys.readouterr().out
  assert "Resumed from the checkpoint at step 10" in out
  # The resumed run ends with the uninterrupted run's parameters.
  assert _fingerprints(out) == fingerprint[1:]
  assert json.load(open(run24 / "results.json"))["step"] == 20


def test_binary_reports_bad_input_without_traceback(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for flags, message in [
      (["--task=nosuchtask", "--grid=a=1"], "--task=nosuchtask: unknown task"),
      (["--task=reverse", "--grid=num_devices=99"],
       "--num_devices=99 but only 1"),
  ]:
    out = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *flags,
         f"--sweep_dir={tmp_path}/s"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()


def _fingerprints(text):
  return re.findall(r"Parameters at step 20: sha256 ([0-9a-f]{64})", text)


def _has_matplotlib():
  try:
    import matplotlib  # noqa: F401
    return True
  except ImportError:
    return False
