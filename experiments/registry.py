"""Task registry: a task name -> its config class and ``run`` function.

Convention (nothing to register by hand): the task ``<name>`` is the module
``experiments/<name>.py`` and it defines

* ``run(config) -> dict`` that trains, evaluates and writes
  ``<config.workdir>/results.json`` (the dict it returns);
* its config class: ``CONFIG = XxxConfig`` or, without ``CONFIG``, the one
  dataclass defined in the module that subclasses
  ``seqjax.experiment.TrainingConfig`` (``ReverseConfig`` in
  ``experiments/reverse.py``).

A dotted name (``my_pkg.my_task``) is imported as is, so tasks can live
outside this repository. ``register(name, config_cls, run)`` adds a task
explicitly (it wins over the convention).

The sweep reads ``accuracy`` and ``train_samples_per_second`` (and
``train_seconds``) from the results; tasks that report them are ranked.

  python -m experiments.registry <task> <config.json>

runs one task from a JSON object of its flags (what ``experiments.sweep``
does in a subprocess per configuration); a bad config or input ends it with
its message and exit status 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import Callable, NamedTuple

from seqjax.errors import SeqjaxError
from seqjax.experiment import TrainingConfig

_REGISTERED: dict[str, "Task"] = {}


class Task(NamedTuple):
  name: str
  config_cls: type
  run: Callable[..., dict]


def register(name: str, config_cls: type, run: Callable[..., dict]) -> Task:
  task = Task(name, config_cls, run)
  _REGISTERED[name] = task
  return task


def module_name(name: str) -> str:
  return name if "." in name else f"experiments.{name}"


def known_tasks() -> list[str]:
  """Registered tasks and the modules in experiments/ that look like tasks."""
  here = os.path.dirname(os.path.abspath(__file__))
  found = set(_REGISTERED)
  for file in os.listdir(here):
    stem, ext = os.path.splitext(file)
    if ext != ".py" or stem.startswith("_"):
      continue
    with open(os.path.join(here, file), encoding="utf-8") as f:
      text = f.read()
    if "TrainingConfig)" in text and "\ndef run(" in text:
      found.add(stem)
  return sorted(found)


def get(name: str) -> Task:
  """The task ``name``; a SeqjaxError naming it if there is none."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if not name or not all(p.isidentifier() for p in name.split(".")):
    raise SeqjaxError(f"--task={name!r} is not a task name; known tasks: "
                      f"{', '.join(known_tasks())}")
  module_path = module_name(name)
  try:
    module = importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    if e.name and module_path.startswith(e.name):
      raise SeqjaxError(f"unknown --task={name}: no module {module_path}; "
                        f"known tasks: {', '.join(known_tasks())}") from e
    raise
  run = getattr(module, "run", None)
  config_cls = getattr(module, "CONFIG", None) or _find_config(module)
  if not callable(run) or config_cls is None:
    raise SeqjaxError(
        f"--task={name}: {module_path} is not a training task (it needs "
        "run(config) and a TrainingConfig dataclass, or CONFIG = XxxConfig); "
        f"known tasks: {', '.join(known_tasks())}")
  return Task(name, config_cls, run)


def _find_config(module):
  found = [v for v in vars(module).values()
           if isinstance(v, type) and dataclasses.is_dataclass(v)
           and issubclass(v, TrainingConfig) and v is not TrainingConfig
           and v.__module__ == module.__name__]
  if len(found) > 1:
    names = ", ".join(sorted(c.__name__ for c in found))
    raise SeqjaxError(f"{module.__name__} defines several configs ({names}): "
                      "name the task's with CONFIG = XxxConfig")
  return found[0] if found else None


def config_from_dict(task: Task, values: dict):
  """The task's config from a dict of flag values; unknown keys are named."""
  fields = {f.name for f in dataclasses.fields(task.config_cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise SeqjaxError(f"{', '.join(unknown)}: not flags of task {task.name} "
                      f"({task.config_cls.__name__})")
  return task.config_cls(**values)


def main(argv: list[str]) -> int:
  """``<task> <config.json>``: runs one configuration (2 on a SeqjaxError).
  ``--validate <task> <configs.json>``: prints each config's validate()
  messages as one JSON line."""
  if len(argv) == 4 and argv[1] == "--validate":
    task = get(argv[2])
    with open(argv[3], encoding="utf-8") as f:
      configs = [config_from_dict(task, values) for values in json.load(f)]
    print(json.dumps([config.validate() for config in configs]))
    return 0
  if len(argv) != 3:
    print("usage: python -m experiments.registry [--validate] <task> "
          "<config.json>", file=sys.stderr)
    return 2
  from absl import logging
  from experiments import common
  logging.use_absl_handler()  # as under absl.app: one format, one filter
  logging.set_verbosity(logging.INFO)
  common.quiet_library_logs()
  try:
    task = get(argv[1])
    with open(argv[2], encoding="utf-8") as f:
      config = config_from_dict(task, json.load(f))
    task.run(config)
  except SeqjaxError as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
