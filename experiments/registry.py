"""Runs one task from a JSON file of its flags: what ``experiments.sweep``
does in a subprocess per configuration.

  python -m experiments.registry <task> <config.json>
  python -m experiments.registry --validate <task> <configs.json>

The tasks themselves are registered explicitly (``seqjax.task.register``);
``seqjax.task.get`` finds a built-in task by name, or a task of your own by
its module's dotted name (``my_pkg.my_task``, which defines ``TASK``). The
first form ends with exit status 2 on a bad config or input; the second
prints, as one JSON line, each config's messages: ``validate()`` and the
checks that need the devices.
"""

from __future__ import annotations

import json
import sys

from seqjax import task as task_lib
from seqjax.errors import SeqjaxError

get = task_lib.get
known_tasks = task_lib.known
config_from_dict = task_lib.config_from_dict


def config_errors(config) -> list[str]:
  """Every message ``seqjax.runner.check`` would raise, as a list."""
  errors = config.validate()
  if not errors and hasattr(config, "device_errors"):
    errors = config.device_errors()
  return errors


def _group_main(argv: list[str]) -> int:
  """--group <task> <configs.json> <status.json>: one vectorized group;
  --estimate <task> <configs.json>: one member's bytes per config (each
  its group's first) and the memory available, as one JSON line."""
  from seqjax import group_runner
  task = get(argv[2])
  with open(argv[3], encoding="utf-8") as f:
    configs = [config_from_dict(task, values) for values in json.load(f)]
  if argv[1] == "--estimate":
    available, where = group_runner.available_bytes()
    print(json.dumps({"member_bytes": [group_runner.member_bytes(task, c)
                                       for c in configs],
                      "available_bytes": available, "where": where}))
    return 0
  from absl import logging
  from experiments import common
  from seqjax import runner
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  common.quiet_library_logs()
  from seqjax import compile_cache
  common.start_compilation_cache(compile_cache.default_dir())
  from seqjax import reliability
  try:
    errors = group_runner.run_group(task, configs)
  except SeqjaxError as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2
  except reliability.TrainingInterrupted as e:  # every member saved
    print(f"Error: {e}", file=sys.stderr)
    return e.exit_code
  runner.write_json_atomic(argv[4], {"errors": errors})
  return 0


def main(argv: list[str]) -> int:
  if len(argv) in (4, 5) and argv[1] in ("--group", "--estimate"):
    return _group_main(argv)
  if len(argv) == 4 and argv[1] == "--validate":
    task = get(argv[2])
    with open(argv[3], encoding="utf-8") as f:
      configs = [config_from_dict(task, values) for values in json.load(f)]
    print(json.dumps([config_errors(config) for config in configs]))
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
  from seqjax import compile_cache
  common.start_compilation_cache(compile_cache.default_dir())
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
