"""Sweeps: every configuration of a grid, each in its own workdir, resumable.

  python -m experiments.sweep --task=reverse \\
      --grid='n_units=64,128,256 batch_size=32,256' --sweep_dir=runs/sweep

Grid syntax: whitespace-separated items ``flag=value[,value...]``; every
flag is a field of the task's config (= a flag of its binary) and every
combination of values is one run (the product, in the order written). A flag
with one value is a setting shared by all runs (``epochs=2``). Values are
parsed as the flag's type: integers, floats (``1e-3``), booleans
(``true``/``false``), strings, and ``none`` for optional flags; values cannot
contain commas or whitespace. ``workdir`` and the multi-process flags are set
by the sweep, not the grid.

Each run trains in ``<sweep_dir>/runs/<flag=value,...>`` (the flags with
more than one value), in a subprocess of its own (``--isolate``, default) so
a crash or a leak stays there. Rerunning the same command resumes: a run
whose ``results.json`` was written for the same flags is skipped, a
half-finished one resumes from its latest checkpoint, a failed one is tried
again. A failing run is recorded (status ``failed`` and its error; the log
of every attempt is in ``<run>/log.txt``) and the others go on. After every
run, ``sweep.csv`` and ``sweep.md`` rank the runs by the task's declared
metric (``Task.metric_for`` the runs' flags, e.g. reverse's ``accuracy``,
addition's ``dev_exact_match``, translate's ``val_chrf``, or ``dev_chrf``
with ``--split=random``: never a test score; ``Task.maximize`` says which
way is better), then
samples/s, and with matplotlib ``sweep.png`` plots that metric against training
time. Runs go one after another (they would share the devices). The exit
status is 1 when a run failed, 2 on bad input.

``--vectorize``: runs that differ only in member flags (the seed, the
learning rate, the clipping norm, and a task's own, e.g. reverse's
``n_eval``; see ``seqjax.group_runner``) train as one vectorized group, one
compiled program for all of them (``seqjax.vectorized``); runs differing in
anything else (units, layers, vocabulary, batch size, epochs, ...) make
separate groups, run one after another, each in a subprocess of its own
(``--isolate``; its training log in ``<sweep_dir>/groups/``). Each member
writes its workdir as a lone run does and is resumed from its checkpoints by
a rerun; a member whose loss goes non-finite is stopped and recorded as
failed while the others go on. ``--group_size`` caps the members of a
group (larger groups are cut into several); a group whose members would not
fit in memory (``--memory_limit_gb``, default the devices' or host's) is
refused before any run with the estimate. A flag whose value a group cannot
train (a learning-rate schedule, model selection, a time budget) is named.

Bad input (unknown task, unknown flag, malformed grid, a value of the wrong
type, a configuration its task rejects, more devices than present) stops
the sweep before any run starts, naming the problem. Any task following
``experiments.registry``'s convention can be swept.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import typing
from typing import Any, Callable, Optional

from experiments import registry
from seqjax import task as task_lib
from seqjax.errors import SeqjaxError

# Set by the sweep itself: every run has its own workdir, and runs are single
# processes.
RESERVED = ("workdir", "coordinator_address", "num_processes", "process_id")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_grid(text: str) -> list[tuple[str, list[str]]]:
  """``'a=1,2 b=x'`` -> ``[("a", ["1", "2"]), ("b", ["x"])]``."""
  grid, seen = [], set()
  for item in text.split():
    key, eq, values = item.partition("=")
    if not eq or not key:
      raise SeqjaxError(f"--grid: {item!r} is not flag=value[,value...]")
    if not key.isidentifier():
      raise SeqjaxError(f"--grid: {key!r} in {item!r} is not a flag name")
    if key in seen:
      raise SeqjaxError(f"--grid: {key} is given twice")
    raw = values.split(",")
    if any(not v for v in raw):
      raise SeqjaxError(f"--grid: {item!r} has an empty value")
    seen.add(key)
    grid.append((key, raw))
  return grid


def _parse_value(key: str, raw: str, tp) -> Any:
  optional = False
  if typing.get_origin(tp) is typing.Union:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional, tp = len(args) < len(typing.get_args(tp)), args[0]
  if optional and raw.lower() == "none":
    return None
  try:
    if tp is bool:
      if raw.lower() not in TRUE + FALSE:
        raise ValueError
      return raw.lower() in TRUE
    if tp in (int, float, str):
      return tp(raw)
  except ValueError:
    raise SeqjaxError(f"--grid: {key}={raw!r} is not a valid "
                      f"{tp.__name__}") from None
  raise SeqjaxError(f"--grid: {key} (a {tp}) cannot be swept")


def typed_grid(task: task_lib.Task, grid: list[tuple[str, list[str]]]
               ) -> list[tuple[str, list[Any]]]:
  """Checks every flag against the task's config and parses the values."""
  hints = typing.get_type_hints(task.config_cls)
  fields = [f.name for f in dataclasses.fields(task.config_cls)]
  unknown = [k for k, _ in grid if k not in fields]
  if unknown:
    raise SeqjaxError(f"--grid: {', '.join(unknown)}: not flag(s) of task "
                      f"{task.name}; its flags: "
                      f"{', '.join(f for f in fields if f not in RESERVED)}")
  reserved = [k for k, _ in grid if k in RESERVED]
  if reserved:
    raise SeqjaxError(f"--grid: {', '.join(reserved)} is set by the sweep "
                      "(each run has its own workdir and one process)")
  typed = [(k, [_parse_value(k, v, hints[k]) for v in values])
           for k, values in grid]
  for k, values in typed:
    if len(set(map(repr, values))) < len(values):
      raise SeqjaxError(f"--grid: {k} repeats a value")
  return typed


def _slug(value: Any) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))


@dataclasses.dataclass
class Run:
  name: str
  assignment: dict
  config: Any

  @property
  def workdir(self) -> str:
    return self.config.workdir


@dataclasses.dataclass
class Plan:
  task: task_lib.Task
  grid_text: str
  grid: list
  sweep_dir: str
  runs: list[Run]
  metric: str = ""   # what ranks the runs (Task.metric_for their configs)

  def __post_init__(self):
    self.metric = self.metric or self.task.metric

  @property
  def grid_keys(self) -> list[str]:
    return [k for k, _ in self.grid]

  @property
  def varying_keys(self) -> list[str]:
    return [k for k, values in self.grid if len(values) > 1]


def plan_sweep(task_name: str, grid_text: str, sweep_dir: str,
               validate_in_subprocess: bool = False) -> Plan:
  """Every run of the sweep, each config validated; raises before any run
  (and before anything is written) if the task, grid or a config is bad."""
  if not sweep_dir:
    raise SeqjaxError("--sweep_dir is required")
  if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
    raise SeqjaxError(f"--sweep_dir={sweep_dir} exists and is not a "
                      "directory")
  try:
    task = registry.get(task_name)
  except SeqjaxError as e:
    raise SeqjaxError(f"--task={task_name}: {e}") from e
  grid = typed_grid(task, parse_grid(grid_text))
  varying = [k for k, values in grid if len(values) > 1]
  runs, names = [], set()
  for combo in itertools.product(*(values for _, values in grid)):
    assignment = dict(zip((k for k, _ in grid), combo))
    name = ",".join(f"{k}={_slug(assignment[k])}" for k in varying) or "run"
    if name in names:  # two values that read alike once made path-safe
      name += f",{len(runs)}"
    names.add(name)
    config = task.config_cls(
        **assignment, workdir=os.path.join(sweep_dir, "runs", name))
    runs.append(Run(name, assignment, config))
  errors = (_validate_in_subprocess(task_name, runs) if validate_in_subprocess
            else [registry.config_errors(run.config) for run in runs])
  _raise_config_errors(runs, errors)
  metrics = list(dict.fromkeys(task.metric_for(r.config) for r in runs))
  if len(metrics) > 1:
    raise SeqjaxError(f"--grid: its runs are ranked by different metrics "
                      f"({', '.join(metrics)}; the flags choose the held-out "
                      "set): sweep them separately")
  return Plan(task, grid_text, grid, sweep_dir, runs, metrics[0])


def _raise_config_errors(runs: list[Run], errors: list[list[str]]) -> None:
  by_message: dict[str, list[str]] = {}
  for run, messages in zip(runs, errors):
    for message in messages:
      by_message.setdefault(message, []).append(run.name)
  if by_message:
    lines = [m if len(runs) == 1 else
             f"{m} (run{'s' if len(n) > 1 else ''} {', '.join(n[:4])}"
             f"{', ...' if len(n) > 4 else ''})" for m, n in by_message.items()]
    raise SeqjaxError("the sweep has bad configurations; nothing was run:\n  "
                      + "\n  ".join(lines))


def _child_env() -> dict:
  path = os.environ.get("PYTHONPATH", "")
  return {**os.environ,
          "PYTHONPATH": ROOT + (os.pathsep + path if path else "")}


def _validate_in_subprocess(task_name: str, runs: list[Run]) -> list[list[str]]:
  """Validates the configs in a child: counting devices starts a backend,
  which on a TPU (or a GPU's memory) the runs' own processes need."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "configs.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump([dataclasses.asdict(r.config) for r in runs], f)
    out = subprocess.run(
        [sys.executable, "-m", "experiments.registry", "--validate", task_name,
         path], capture_output=True, text=True, env=_child_env())
  if out.returncode != 0:
    raise SeqjaxError(f"validating the sweep's configs failed:\n"
                      f"{out.stderr.strip()[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


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
          env=_child_env(), timeout=timeout)
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
           f", {plan.metric} {_fmt(results.get(plan.metric))}"))
    rows.append(_row(plan, run, status, results, error or "", wall_s))
    write_reports(plan, rows)
  return rows


# --------------------------------------------------------------------------
# --vectorize: groups of runs trained as one program.

GIB = 1024 ** 3


@dataclasses.dataclass
class Group:
  index: int
  runs: list[Run]
  member_bytes: int = 0

  @property
  def name(self) -> str:
    return f"group-{self.index}"


def plan_groups(plan: Plan, group_size: int = 0, memory_limit_bytes: int = 0,
                estimate_in_subprocess: bool = True) -> list[Group]:
  """The sweep's vectorized groups; raises before any run (nothing
  written) when a run sets a flag a group cannot train (naming it), or
  when a group would not fit in memory (with the estimate)."""
  from seqjax import group_runner
  errors = [group_runner.vectorize_errors(plan.task, r.config)
            for r in plan.runs]
  if any(errors):
    _raise_config_errors(plan.runs, errors)
  groups = []
  for members in group_runner.split_groups(plan.task,
                                           [r.config for r in plan.runs]):
    step = group_size or len(members)
    for i in range(0, len(members), step):
      groups.append(Group(len(groups) + 1,
                          [plan.runs[j] for j in members[i:i + step]]))
  firsts = [g.runs[0].config for g in groups]
  if estimate_in_subprocess:
    estimate = _estimate_in_subprocess(plan.task.name, firsts)
  else:
    available, where = group_runner.available_bytes()
    estimate = {"member_bytes": [group_runner.member_bytes(plan.task, c)
                                 for c in firsts],
                "available_bytes": available, "where": where}
  available = memory_limit_bytes or estimate["available_bytes"]
  where = ("--memory_limit_gb" if memory_limit_bytes else estimate["where"])
  too_big = []
  for group, per_member in zip(groups, estimate["member_bytes"]):
    group.member_bytes = per_member
    need = per_member * len(group.runs)
    if need > 0.9 * available:
      fits = max(0, int(0.9 * available // max(per_member, 1)))
      too_big.append(
          f"{group.name} ({len(group.runs)} members, e.g. "
          f"{group.runs[0].name}) needs about {need / GIB:.2f} GiB "
          f"({per_member / GIB:.3f} GiB a member: state, data, activations "
          f"of one call), more than 90% of the {available / GIB:.2f} GiB of "
          f"{where}; at most {fits} members fit: --group_size={fits}"
          if fits else f"{group.name}: one member alone needs "
          f"{per_member / GIB:.2f} GiB, more than 90% of the "
          f"{available / GIB:.2f} GiB of {where}")
  if too_big:
    raise SeqjaxError("--vectorize: a group does not fit in memory; nothing "
                      "was run:\n  " + "\n  ".join(too_big))
  return groups


def _estimate_in_subprocess(task_name: str, configs: list) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "configs.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump([dataclasses.asdict(c) for c in configs], f)
    out = subprocess.run(
        [sys.executable, "-m", "experiments.registry", "--estimate",
         task_name, path], capture_output=True, text=True, env=_child_env())
  if out.returncode != 0:
    raise SeqjaxError(f"estimating the groups' memory failed:\n"
                      f"{out.stderr.strip()[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


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
          stderr=subprocess.STDOUT, env=_child_env(), timeout=timeout)
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
             f", {plan.metric} {_fmt(results.get(plan.metric))}"))
      rows.append(_row(plan, run, status, results, error or "", wall_s))
    log(f"{prefix} done in {wall_s:.1f} s")
    write_reports(plan, rows)
  return rows


def _number(x) -> float:
  return x if isinstance(x, (int, float)) and not math.isnan(x) else -math.inf


def rank(rows: list[dict], metric: str = "accuracy", maximize: bool = True
         ) -> list[dict]:
  """Done runs by ``metric``, best first (descending when ``maximize``),
  then samples/s (descending); runs without it after them, failed ones last."""
  sign = -1 if maximize else 1

  def key(r):
    value = _number(r.get(metric))
    missing = value == -math.inf
    return (r["status"] != "done", missing, 0 if missing else sign * value,
            -_number(r["samples_per_s"]))
  return sorted(rows, key=key)


def _fmt(x, digits: int = 4) -> str:
  if x is None:
    return ""
  if isinstance(x, float):
    return f"{x:.{digits}g}" if abs(x) < 1e3 else f"{x:,.0f}"
  return str(x)


def write_reports(plan: Plan, rows: list[dict]) -> list[str]:
  """sweep.csv, sweep.md and (with matplotlib) sweep.png; -> their paths."""
  m = plan.metric
  ranked = rank(rows, m, plan.task.maximize)
  columns = (["rank", "run", "status"] + plan.grid_keys +
             [m, "samples_per_s", "train_seconds", "steps", "wall_s",
              "workdir", "error"])
  csv_path = os.path.join(plan.sweep_dir, "sweep.csv")
  with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    for i, row in enumerate(ranked, 1):
      writer.writerow({"rank": i, **{k: row.get(k) for k in columns[1:]}})
  os.replace(csv_path + ".tmp", csv_path)

  done = [r for r in ranked if r["status"] == "done"]
  failed = [r for r in ranked if r["status"] != "done"]
  keys = plan.varying_keys
  lines = [f"# Sweep: {plan.task.name}", "",
           f"Grid `{plan.grid_text}`: {len(plan.runs)} runs; {len(done)} done, "
           f"{len(failed)} failed, {len(plan.runs) - len(rows)} not run yet.",
           "", f"## Ranked by {m} ({'higher' if plan.task.maximize else 'lower'}"
           " is better; then samples/s)", "",
           "| rank | run | " + "".join(f"{k} | " for k in keys) +
           f"{m} | samples/s | train s | steps |",
           "|---" * (6 + len(keys)) + "|"]
  for i, r in enumerate(done, 1):
    lines.append(f"| {i} | {r['run']} | " +
                 "".join(f"{_fmt(r[k])} | " for k in keys) +
                 f"{_fmt(r[m])} | {_fmt(r['samples_per_s'])} | "
                 f"{_fmt(r['train_seconds'], 3)} | {_fmt(r['steps'])} |")
  fastest = sorted(done, key=lambda r: -_number(r["samples_per_s"]))
  lines += ["", "## Ranked by samples/s", "",
            f"| rank | run | samples/s | {m} |", "|---|---|---|---|"]
  lines += [f"| {i} | {r['run']} | {_fmt(r['samples_per_s'])} | "
            f"{_fmt(r[m])} |" for i, r in enumerate(fastest, 1)]
  if failed:
    lines += ["", "## Failed", ""]
    lines += [f"- `{r['run']}`: {r['error']} (log: {r['workdir']}/log.txt)"
              for r in failed]
  md_path = os.path.join(plan.sweep_dir, "sweep.md")
  with open(md_path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  paths = [csv_path, md_path]
  png = _plot(plan, done)
  return paths + ([png] if png else [])


def _plot(plan: Plan, done: list[dict]) -> Optional[str]:
  from experiments import plot
  m = plan.metric
  points = [r for r in done if r[m] is not None
            and r["train_seconds"] is not None]
  if not points:
    return None
  try:
    plt = plot.require_matplotlib()
  except SeqjaxError:
    return None  # the CSV and the table are the report; the plot is extra
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.scatter([r["train_seconds"] for r in points],
             [r[m] for r in points])
  for r in points:
    ax.annotate(r["run"], (r["train_seconds"], r[m]), fontsize=7,
                xytext=(3, 3), textcoords="offset points")
  ax.margins(0.15)  # room for the labels
  ax.set(xlabel="training time (s)", ylabel=m,
         title=f"Sweep: {plan.task.name}")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(plan.sweep_dir, "sweep.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv=None):
  from absl import app
  from absl import flags

  flags.DEFINE_string("task", "", "Task to sweep: experiments/<task>.py, or "
                      "a dotted module (see experiments/registry.py).")
  flags.DEFINE_string("grid", "", "'flag=v1,v2 flag2=v3 ...': every "
                      "combination is a run; one value = a shared setting.")
  flags.DEFINE_string("sweep_dir", "", "Where the runs' workdirs, sweep.csv, "
                      "sweep.md and sweep.png go. Rerun to resume.")
  flags.DEFINE_bool("isolate", True, "Run each configuration in a subprocess "
                    "of its own (false: in this process, one after another).")
  flags.DEFINE_float("run_timeout", 0, "Seconds before a run is stopped and "
                     "recorded as failed (0: no limit; with --isolate).")
  flags.DEFINE_bool("dry_run", False, "Check the grid and list the runs; "
                    "run nothing.")
  flags.DEFINE_bool("vectorize", False, "Train runs that differ only in "
                    "member flags (seed, learning_rate, clip_norm, ...) as "
                    "one vectorized group (jax.vmap over stacked states).")
  flags.DEFINE_integer("group_size", 0, "--vectorize: at most this many "
                       "members a group (0: no cap).", lower_bound=0)
  flags.DEFINE_float("memory_limit_gb", 0, "--vectorize: memory a group may "
                     "use (0: the devices', or the host's available).",
                     lower_bound=0)
  FLAGS = flags.FLAGS

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from experiments import common
    common.quiet_library_logs()  # in-process runs log as their binaries do
    try:
      if not FLAGS.task:
        raise SeqjaxError(f"--task is required; known tasks: "
                          f"{', '.join(registry.known_tasks())}")
      plan = plan_sweep(FLAGS.task, FLAGS.grid, FLAGS.sweep_dir,
                        validate_in_subprocess=FLAGS.isolate)
      print(f"Sweep of {plan.task.name}: {len(plan.runs)} run(s) under "
            f"{plan.sweep_dir}")
      groups = None
      if FLAGS.vectorize:
        groups = plan_groups(
            plan, FLAGS.group_size, int(FLAGS.memory_limit_gb * GIB),
            estimate_in_subprocess=FLAGS.isolate)
        print(f"--vectorize: {len(groups)} group(s): " + ", ".join(
            f"{g.name} ({len(g.runs)} members, ~{g.member_bytes / 2**20:.0f}"
            " MiB each)" for g in groups))
      elif FLAGS.group_size or FLAGS.memory_limit_gb:
        raise SeqjaxError("--group_size and --memory_limit_gb need "
                          "--vectorize")
      if FLAGS.dry_run:
        for run in plan.runs:
          print(f"  {run.name}: {run.assignment}")
        return
      if groups is not None:
        rows = run_sweep_vectorized(plan, groups, isolate=FLAGS.isolate,
                                    run_timeout=FLAGS.run_timeout or None)
      else:
        rows = run_sweep(plan, isolate=FLAGS.isolate,
                         run_timeout=FLAGS.run_timeout or None)
    except SeqjaxError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    failed = sum(r["status"] != "done" for r in rows)
    print(f"Wrote {plan.sweep_dir}/sweep.csv and sweep.md; {len(rows) - failed}"
          f" done, {failed} failed.")
    sys.exit(1 if failed else 0)

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
