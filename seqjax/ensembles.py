"""Ensembles trained as one vectorized group: K seeds of a translation run
trained together (``seqjax.group_runner``), each member in ``member=i`` of
the group's workdir as its lone run would be, then evaluated as one
ensemble whose results.json (in the group's workdir) lists the members
under ``MEMBERS_KEY``. ``config`` is a translation run's settings
(``seqjax.translate_runs``), ``task`` the translate task."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

from seqjax import translate_inference
from seqjax import translate_runs
from seqjax import translation_load
from seqjax.errors import ParameterError

MEMBERS_KEY = "ensemble_members"  # results.json of a group's ensemble
# What a group's results.json keeps when its ensemble is evaluated again.
RECORD_KEYS = (MEMBERS_KEY, "member_seeds", "member_selected_steps",
               "train_seconds", "wall_seconds", "flags")


def members_record(workdir: str) -> Optional[dict]:
  """results.json of ``workdir`` where a group was trained there (its
  members' subdirectories under MEMBERS_KEY), else None."""
  from seqjax import runner
  results = runner.read_results(workdir) if workdir else None
  if results and isinstance(results.get(MEMBERS_KEY), list):
    return results
  return None


def member_configs(config, workdir: str) -> list:
  """The group's members: seeds ``config.seed``.., each in
  ``workdir/member=i``."""
  return [dataclasses.replace(config, seed=config.seed + i,
                              ensemble_members=1,
                              workdir=os.path.join(workdir, f"member={i}"))
          for i in range(config.ensemble_members)]


def train_members(task, config) -> dict:
  """The ``config.ensemble_members`` members trained as one vectorized
  group, then evaluated as one ensemble; -> its results (results.json in
  the group's workdir, with the members and the training and wall
  seconds)."""
  from seqjax import group_runner, runner
  t0 = time.perf_counter()
  runner.check(config)
  workdir = runner.make_workdir(runner.default_workdir(config, task.name))
  configs = member_configs(config, workdir)
  errors = group_runner.run_group(task, configs)
  failed = [f"{c.workdir}: {e}" for c, e in zip(configs, errors) if e]
  if failed:
    raise ParameterError("ensemble_members", config.ensemble_members,
                         "; ".join(failed))
  trained = [runner.read_results(c.workdir) for c in configs]
  record = {
      MEMBERS_KEY: [os.path.basename(c.workdir) for c in configs],
      "member_seeds": [c.seed for c in configs],
      "member_selected_steps": [r.get("selected_step") for r in trained],
      # One loop trains every member: the group's seconds, not a sum.
      "train_seconds": max(r["train_seconds"] for r in trained),
      "flags": dataclasses.asdict(config)}
  results = evaluate_members(task, config, workdir, record, set())
  results["wall_seconds"] = time.perf_counter() - t0
  runner.write_results(workdir, results)
  return results


def run_members(task, config, record: dict, explicit: set[str]) -> dict:
  """Translation or evaluation (``config.translate``, else
  ``config.eval_only``) on a group's workdir: its ensemble. ``explicit``:
  the settings given on purpose (refused where they differ from the
  record)."""
  from seqjax import runner
  members = [os.path.join(config.workdir, m) for m in record[MEMBERS_KEY]]
  if config.ensemble or config.score:
    setting = "ensemble" if config.ensemble else "score"
    raise ParameterError(setting, getattr(config, setting), (
        f"workdir={config.workdir} holds the ensemble of {len(members)} "
        f"members ({', '.join(record[MEMBERS_KEY])}): name one member's "
        "workdir"), mentions=("workdir",))
  runner.check(config)
  if config.translate:
    return translate_inference.translate_sentences(dataclasses.replace(
        config, workdir=members[0], ensemble=",".join(members[1:])))
  kept = {k: record[k] for k in record if k in RECORD_KEYS}
  results = evaluate_members(task, config, config.workdir, kept, explicit)
  runner.write_results(config.workdir, results)
  return results


def evaluate_members(task, config, workdir: str, record: dict,
                     explicit: set[str]) -> dict:
  """The ensemble of ``record``'s members (each its selected state)
  evaluated as an ensemble of workdirs is; -> the results (``record``
  included) to write in ``workdir``."""
  from seqjax import runner
  members = [os.path.join(workdir, m) for m in record[MEMBERS_KEY]]
  lead = dataclasses.replace(config, workdir=members[0], eval_only=True,
                             ensemble=",".join(members[1:]),
                             ensemble_members=1)
  lead = translate_runs.recorded_config(lead, explicit)
  translate_runs.check_ensemble(lead)
  setup = task.setup(lead, members[0])
  _, _, params, step = translation_load.restore_model(
      members[0], *translation_load.load_records(members[0]))
  results = runner.base_results(task.name, config)
  results.update(record, workdir=workdir, step=step)
  results.update(task.evaluate(lead, setup, _Evaluated(params, step)))
  return results


@dataclasses.dataclass
class _Evaluated:
  """What a task's ``evaluate`` reads of a state."""
  params: object
  step: int
