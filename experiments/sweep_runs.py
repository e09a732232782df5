"""Running a sweep's plan: each run (or vectorized group) in a subprocess
of its own or in this process, resumable, failures recorded and the
reports rewritten after every run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Callable, Optional

from experiments.sweep_plan import Group, Plan, Run, child_env
from experiments.sweep_report import fmt, write_reports

def _comparable(flags: dict) -> dict:
  # The workdir may be spelled differently (relative, absolute) across calls.
  flags = json.loads(json.dumps(flags, default=str))
  flags.pop("workdir", None)
  return flags


def _settle(run, error, wall_s: float, **extra):
  """A finished run's (status, results, error), recorded in its
  sweep_status.json: a run that wrote no results.json failed."""
  from seqjax import runner  # pylint: disable=g-import-not-at-top
  results = finished_results(run) if error is None else None
  if error is None and results is None:
    error = "the run ended without writing results.json for these flags"
  status = "failed" if error else "done"
  runner.write_json_atomic(
      os.path.join(run.workdir, "sweep_status.json"),
      {"status": status, "error": error or "", "wall_s": wall_s, **extra})
  return status, results, error


def finished_results(run: Run) -> Optional[dict]:
  """The run's results if it finished with exactly these flags."""
  from seqjax import runner  # pylint: disable=g-import-not-at-top
  results = runner.read_results(run.workdir)
  if results is None or _comparable(results.get("flags", {})) != _comparable(
      dataclasses.asdict(run.config)):
    return None
  return results


ATTEMPT = "=== sweep: attempt started "


def _error_from_log(path: str, returncode: int) -> str:
  """The error of the latest attempt: its "Error: ..." line (a SeqjaxError)
  or the last line of its traceback."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = [l.rstrip() for l in f if l.strip()]
  except OSError:
    lines = []
  starts = [i for i, l in enumerate(lines) if l.startswith(ATTEMPT)]
  lines = lines[starts[-1] + 1:] if starts else lines
  for line in reversed(lines):
    if line.startswith("Error: "):
      return line[len("Error: "):]
  if any(l.startswith("Traceback") for l in lines):
    return lines[-1]
  return f"exit code {returncode}" + (f": {lines[-1]}" if lines else "")


def _run_subprocess(plan: Plan, run: Run, timeout: Optional[float]
                    ) -> Optional[str]:
  """Runs one configuration in its own process; -> None or its error."""
  config_path = os.path.join(run.workdir, "sweep_config.json")
  log_path = os.path.join(run.workdir, "log.txt")
  with open(log_path, "a", encoding="utf-8") as log:  # keeps every attempt
    log.write(f"{ATTEMPT}{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    log.flush()
    try:
      out = subprocess.run(
          [sys.executable, "-m", "experiments.registry", plan.task.name,
           config_path], stdout=log, stderr=subprocess.STDOUT,
          env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
      return f"timed out after {timeout:g} s (--run_timeout)"
  if out.returncode != 0:
    return _error_from_log(log_path, out.returncode)
  return None


def _run_in_process(plan: Plan, run: Run) -> Optional[str]:
  try:
    plan.task.run(run.config)
  except Exception as e:  # pylint: disable=broad-except
    return f"{type(e).__name__}: {e}"
  return None


def _row(plan: Plan, run: Run, status: str, results: Optional[dict],
         error: str = "", wall_s: Optional[float] = None) -> dict:
  results = results or {}
  return {"run": run.name, "status": status, **run.assignment,
          plan.metric: results.get(plan.metric),
          "samples_per_s": results.get("train_samples_per_second"),
          "train_seconds": results.get("train_seconds"),
          "steps": results.get("step"), "wall_s": wall_s,
          "workdir": run.workdir, "error": error}


def run_sweep(plan: Plan, isolate: bool = True,
              run_timeout: Optional[float] = None,
              log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or skips, or resumes) every run; -> one row per run."""
  from seqjax import runner
  os.makedirs(os.path.join(plan.sweep_dir, "runs"), exist_ok=True)
  rows = []
  for i, run in enumerate(plan.runs, 1):
    prefix = f"[{i}/{len(plan.runs)}] {run.name}"
    results = finished_results(run)
    if results is not None:
      log(f"{prefix}: finished earlier, skipped")
      rows.append(_row(plan, run, "done", results))
      write_reports(plan, rows)
      continue
    os.makedirs(run.workdir, exist_ok=True)
    resuming = os.path.isdir(os.path.join(run.workdir, "checkpoints"))
    log(f"{prefix}: {'resuming' if resuming else 'running'} in {run.workdir}")
    runner.write_json_atomic(os.path.join(run.workdir, "sweep_config.json"),
                                 dataclasses.asdict(run.config))
    t0 = time.perf_counter()
    error = (_run_subprocess(plan, run, run_timeout) if isolate
             else _run_in_process(plan, run))
    wall_s = time.perf_counter() - t0
    status, results, error = _settle(run, error, wall_s)
    log(f"{prefix}: {status} in {wall_s:.1f} s"
        + (f": {error}" if error else
           f", {plan.metric} {fmt(results.get(plan.metric))}"))
    rows.append(_row(plan, run, status, results, error or "", wall_s))
    write_reports(plan, rows)
  return rows


# --------------------------------------------------------------------------
# --vectorize: groups of runs trained as one program.


def _run_group_subprocess(plan: Plan, group: Group, runs: list[Run],
                          timeout: Optional[float]) -> list[Optional[str]]:
  """One group in its own process; -> each member's error (or None)."""
  gdir = os.path.join(plan.sweep_dir, "groups")
  os.makedirs(gdir, exist_ok=True)
  config_path = os.path.join(gdir, f"{group.name}.json")
  status_path = os.path.join(gdir, f"{group.name}.status.json")
  log_path = os.path.join(gdir, f"{group.name}.log.txt")
  with open(config_path, "w", encoding="utf-8") as f:
    json.dump([dataclasses.asdict(r.config) for r in runs], f)
  if os.path.exists(status_path):
    os.unlink(status_path)
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"{ATTEMPT}{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    log.flush()
    try:
      out = subprocess.run(
          [sys.executable, "-m", "experiments.registry", "--group",
           plan.task.name, config_path, status_path], stdout=log,
          stderr=subprocess.STDOUT, env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
      return [f"its group timed out after {timeout:g} s (--run_timeout)"
              ] * len(runs)
  try:
    with open(status_path, encoding="utf-8") as f:
      return json.load(f)["errors"]
  except (OSError, ValueError, KeyError):
    error = _error_from_log(log_path, out.returncode)
    return [f"its group failed: {error} (log: {log_path})"] * len(runs)


def _run_group_in_process(plan: Plan, runs: list[Run]) -> list[Optional[str]]:
  from seqjax import group_runner
  try:
    return group_runner.run_group(plan.task, [r.config for r in runs])
  except Exception as e:  # pylint: disable=broad-except
    return [f"its group failed: {type(e).__name__}: {e}"] * len(runs)


def run_sweep_vectorized(plan: Plan, groups: list[Group], isolate: bool = True,
                         run_timeout: Optional[float] = None,
                         log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or skips, or resumes) every group; -> one row per run."""
  from seqjax import runner
  os.makedirs(os.path.join(plan.sweep_dir, "runs"), exist_ok=True)
  rows = []
  for group in groups:
    prefix = f"[{group.name}/{len(groups)}]"
    todo = []
    for run in group.runs:
      results = finished_results(run)
      if results is not None:
        log(f"{prefix} {run.name}: finished earlier, skipped")
        rows.append(_row(plan, run, "done", results))
      else:
        todo.append(run)
    if not todo:
      write_reports(plan, rows)
      continue
    for run in todo:
      os.makedirs(run.workdir, exist_ok=True)
      runner.write_json_atomic(os.path.join(run.workdir, "sweep_config.json"),
                               dataclasses.asdict(run.config))
      with open(os.path.join(run.workdir, "log.txt"), "a",
                encoding="utf-8") as f:
        f.write(f"{ATTEMPT}{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n"
                f"vectorized {group.name} of {len(todo)} member(s); its "
                f"training log: {os.path.join(plan.sweep_dir, 'groups')}\n")
    resuming = sum(os.path.isdir(os.path.join(r.workdir, "checkpoints"))
                   for r in todo)
    log(f"{prefix} {len(todo)} member(s) in one program"
        + (f" ({resuming} resuming)" if resuming else "") + ": "
        + ", ".join(r.name for r in todo[:6]) + (" ..." if len(todo) > 6
                                                  else ""))
    t0 = time.perf_counter()
    errors = (_run_group_subprocess(plan, group, todo, run_timeout) if isolate
              else _run_group_in_process(plan, todo))
    wall_s = time.perf_counter() - t0
    for run, error in zip(todo, errors):
      status, results, error = _settle(run, error, wall_s, group=group.name)
      log(f"{prefix} {run.name}: {status}"
          + (f": {error}" if error else
             f", {plan.metric} {fmt(results.get(plan.metric))}"))
      rows.append(_row(plan, run, status, results, error or "", wall_s))
    log(f"{prefix} done in {wall_s:.1f} s")
    write_reports(plan, rows)
  return rows
