"""The task contract: what a task supplies, and the registry of tasks.

A task is data + a model + a loss + an evaluation. It subclasses ``Task``:

* ``name``, ``config_cls`` (a ``seqjax.config.TrainingConfig`` dataclass: its
  fields are the binary's flags, with declared bounds and choices);
* ``metric`` and ``maximize``: the results.json key that ranks its runs (a
  sweep sorts by it) and whether higher is better; ``metric_for(config)``
  when flags change it (translate's split: val or dev, never test);
* ``setup(config, workdir) -> Setup``: the training data, the model, its loss
  and what a checkpoint must match (``model_config``);
* ``evaluate(config, setup, state) -> dict``: the trained model's results
  (printed as the task likes; the dict goes into results.json). With
  ``Setup.select_metric`` and ``--keep_best`` (its default then), ``state``
  is the best epoch's, not the latest.

``seqjax.runner.run(task, config)`` does the rest, the same for every task:
checks, workdir, initialisation, summary, train or resume, results.json
(written by process 0 only). A task with modes the runner does not cover
(several models in one run, inference only) overrides ``Task.run``.

Tasks register explicitly, ``register(MyTask())``, or by module,
``register_modules({"mine": "my_pkg.my_task"})`` (imported when first asked
for: ``experiments`` names its binaries' tasks so); ``get(name)`` finds them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional

from seqjax.errors import SeqjaxError


@dataclasses.dataclass
class Setup:
  """What a task hands the runner before training."""

  model: Any                       # a Flax module
  init_inputs: tuple               # model.init(key, *init_inputs)
  train: Any                       # dict of arrays (or datasets, with a plan)
  loss_fn: Callable
  model_config: dict               # what a checkpoint must match
  title: str = ""                  # the parameter table's title
  batch_plan: Any = None           # seqjax.train.BucketPlan over ``train``
  fit_config: Any = None           # a seqjax.train.FitConfig; default: flags'
  initial_carry: Any = None        # stateful training (seqjax.train.fit)
  reset_every: int = 0
  epoch_end: Optional[Callable] = None   # (state, epoch) -> dict to log
  # Model selection: the key of epoch_end's dict that picks the best epoch
  # (a held-out metric, e.g. "dev_chrf"), and whether higher is better. With
  # it the runner keeps the best epoch's checkpoint (--keep_best) and
  # evaluate() gets that state; --patience and --lr_schedule=plateau use it.
  select_metric: Optional[str] = None
  select_maximize: bool = True
  # Files beside the checkpoint (vocabularies): save_files(workdir) runs once
  # the workdir exists and its checkpoint, if any, matches model_config.
  save_files: Optional[Callable[[str], None]] = None
  data: Any = None                 # anything else evaluate() needs


class Task:
  """Base class of a task; see the module docstring."""

  name: str = ""
  config_cls: type = type(None)
  metric: str = "accuracy"
  maximize: bool = True
  size_flags: tuple = ()          # named when the model is too large

  def metric_for(self, config) -> str:
    """The results key that ranks a run with ``config`` (``metric`` unless
    a task's flags choose among held-out sets)."""
    del config
    return self.metric

  def setup(self, config, workdir: str) -> Setup:
    raise NotImplementedError

  def evaluate(self, config, setup: Setup, state) -> dict:
    raise NotImplementedError

  def run(self, config) -> dict:
    from seqjax import runner  # runner imports the training stack
    return runner.run(self, config)


_REGISTERED: dict[str, Task] = {}
# Task name -> the module defining it, imported on first use (a package of
# binaries names its tasks without importing each: that costs their imports).
_MODULES: dict[str, str] = {}


def register(task: Task) -> Task:
  if not task.name:
    raise ValueError(f"{type(task).__name__} has no name")
  _REGISTERED[task.name] = task
  return task


def register_modules(modules: dict[str, str]) -> None:
  """Names tasks by the modules that define them (``{"reverse":
  "experiments.reverse"}``); ``get`` imports one when first asked for it."""
  for name, module_path in modules.items():
    if not name.isidentifier():
      raise ValueError(f"{name!r} is not a task name")
    _MODULES[name] = module_path


def known() -> list[str]:
  return sorted(set(_REGISTERED) | set(_MODULES))


def get(name: str) -> Task:
  """The task ``name``: registered, named by ``register_modules``, or
  ``pkg.module`` defining ``TASK``; a SeqjaxError naming it otherwise."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if not name or not all(p.isidentifier() for p in name.split(".")):
    raise SeqjaxError(f"{name!r} is not a task name; known tasks: "
                      f"{', '.join(known())}")
  module_path = _MODULES.get(name, name)
  if module_path == name and "." not in name:
    raise SeqjaxError(f"unknown task {name!r}; known tasks: "
                      f"{', '.join(known())}")
  try:
    module = importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    if e.name and module_path.startswith(e.name):
      raise SeqjaxError(f"unknown task {name!r}: no module {module_path}; "
                        f"known tasks: {', '.join(known())}") from e
    raise
  task = getattr(module, "TASK", None)
  if not isinstance(task, Task):
    raise SeqjaxError(f"{module_path} defines no TASK (a seqjax.task.Task); "
                      f"known tasks: {', '.join(known())}")
  return register(task) if task.name == name else task


def config_from_dict(task: Task, values: dict):
  """The task's config from a dict of flag values; unknown keys are named."""
  fields = {f.name for f in dataclasses.fields(task.config_cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise SeqjaxError(f"{', '.join(unknown)}: not flags of task {task.name} "
                      f"({task.config_cls.__name__})")
  return task.config_cls(**values)
