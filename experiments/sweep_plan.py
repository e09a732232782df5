"""A sweep's plan: the grid parsed and typed against the task's settings,
one run (and workdir) a combination, checked before any run; with
``--vectorize``, the groups of runs that train as one program.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import typing
from typing import Any

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


def child_env() -> dict:
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
         path], capture_output=True, text=True, env=child_env())
  if out.returncode != 0:
    raise SeqjaxError(f"validating the sweep's configs failed:\n"
                      f"{out.stderr.strip()[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


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
         task_name, path], capture_output=True, text=True, env=child_env())
  if out.returncode != 0:
    raise SeqjaxError(f"estimating the groups' memory failed:\n"
                      f"{out.stderr.strip()[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
