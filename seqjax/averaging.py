"""Checkpoint averaging: the mean of several checkpoints' parameters, written
as a new workdir.

``average(sources, to)`` takes checkpoints (``last_checkpoints`` or
``best_checkpoints`` of one or more workdirs), checks that they are one
model's (the checkpoint config, the parameters' shapes and dtypes, and
vocab.json must agree) before reading an array, and writes to the new
workdir ``to``: the averaged checkpoint at the newest step averaged, with
that step's optimizer state (so it resumes and restores as any checkpoint
does), copies of the first workdir's vocab.json (and SentencePiece
models), and ``results.json`` /
``average.json`` naming the checkpoints averaged (step, metric, value).
The parameters, and an EMA copy where the checkpoints hold one, are the
leaf by leaf mean (computed in float64, stored in each leaf's dtype).

Nothing in a source workdir is written: checkpoints are read by path, not
through a manager that would clean or lock the directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from seqjax import reliability
from seqjax import settings as settings_lib
from seqjax.checkpoint import Checkpointer, _signature, flat_record
from seqjax.data import vocab_file
from seqjax.errors import SeqjaxError

RECORD = "average.json"
VOCAB_FILE = vocab_file.VOCAB_FILE
# Read beside the checkpoint by a translation model: vocab.json records the
# SentencePiece models' sha256, so agreeing vocab.json files mean equal models.
COPIED = (VOCAB_FILE, *vocab_file.MODEL_FILES.values())
AVERAGED = ("params", "ema")  # state keys averaged; the others: the newest


class AverageError(SeqjaxError):
  """Checkpoints that cannot be averaged, or a bad destination."""


@dataclasses.dataclass(frozen=True)
class Source:
  """One checkpoint: ``<workdir>/<subdir>/<step>``, with the selection
  metric and its value at that step where recorded."""

  workdir: str
  subdir: str
  step: int
  metric: Optional[str] = None
  value: Optional[float] = None

  @property
  def path(self) -> str:
    return os.path.join(self.workdir, self.subdir, str(self.step))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def saved_steps(directory: str) -> list[int]:
  """The finished checkpoint steps in ``directory`` (orbax renames a step's
  directory to its number only once it is complete), oldest first."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _read_item(path: str, item: str) -> Optional[dict]:
  """A JSON item (config, selection) of the checkpoint at ``path``."""
  try:
    with open(os.path.join(path, item, "metadata"), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _read_config(path: str) -> Optional[dict]:
  """The checkpoint's record, an older one in today's form."""
  config = _read_item(path, "config")
  return None if config is None else settings_lib.upgrade_record(config)


def last_checkpoints(workdir: str, n: int) -> list[Source]:
  """The ``n`` newest checkpoints of ``workdir``, each with its epoch's
  selection value where its record has one."""
  steps = saved_steps(os.path.join(workdir, "checkpoints"))
  if len(steps) < n:
    raise AverageError(f"{workdir} holds {len(steps)} checkpoint(s) "
                       f"({steps}), fewer than the {n} asked for")
  out = []
  for step in steps[-n:]:
    path = os.path.join(workdir, "checkpoints", str(step))
    record = _read_item(path, "selection") or {}
    value = record.get("last") if record.get("last_step") == step else None
    out.append(Source(workdir, "checkpoints", step, record.get("metric"),
                      value))
  return out


def best_checkpoints(workdir: str, n: int) -> list[Source]:
  """The ``n`` best checkpoints kept in ``<workdir>/best`` (see
  ``best_checkpoint.BestCheckpoint``, ``keep`` of them), best first."""
  record = _read_json(os.path.join(workdir, "best.json")) or {}
  kept = [k for k in record.get("kept") or
          ([record] if "step" in record else [])
          if k.get("step") in saved_steps(os.path.join(workdir, "best"))]
  if len(kept) < n:
    raise AverageError(
        f"{workdir} keeps {len(kept)} best checkpoint(s), fewer than the {n} "
        "asked for (a run keeps that many with keep_best_n)")
  return [Source(workdir, "best", int(k["step"]), record.get("metric"),
                 k.get("value")) for k in kept[:n]]


def describe(workdir: str) -> Optional[str]:
  """What the checkpoint of an averaged workdir is, e.g. "the average of 2
  checkpoints (last 2: steps 6, 9)"; None for a workdir ``average`` did
  not write."""
  record = _read_json(os.path.join(workdir, RECORD))
  if not record or "checkpoints" not in record:
    return None
  steps = ", ".join(str(c["step"]) for c in record["checkpoints"])
  how = f"{record['averaged']}: " if record.get("averaged") else ""
  return (f"the average of {len(record['checkpoints'])} checkpoints "
          f"({how}steps {steps})")


def _read_json(path: str) -> Optional[dict]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _metadata_tree(source: Source):
  try:
    return ocp.StandardCheckpointer().metadata(
        os.path.join(source.path, "state")).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    raise AverageError(f"checkpoint {source.path}: its arrays cannot be "
                       f"read ({type(e).__name__})") from e


def _vocab_text(workdir: str) -> Optional[str]:
  try:
    with open(os.path.join(workdir, VOCAB_FILE), encoding="utf-8") as f:
      return f.read()
  except OSError:
    return None


def check_same_model(sources: list[Source]) -> dict:
  """The checkpoints' shared model config; raises AverageError naming the
  first checkpoint (or workdir) whose config, parameter shapes or
  vocab.json differ from the first's."""
  if not sources:
    raise AverageError("no checkpoints to average")
  first = sources[0]
  config = _read_config(first.path)
  if config is None:
    raise AverageError(f"checkpoint {first.path}: no readable config")
  signature = _signature(_metadata_tree(first))
  vocab = _vocab_text(first.workdir)
  for s in sources[1:]:
    other = _read_config(s.path)
    if other != config:
      mine, theirs = flat_record(config), flat_record(other or {})
      keys = sorted(k for k in set(mine) | set(theirs)
                    if mine.get(k) != theirs.get(k))
      raise AverageError(f"checkpoint {s.path} is another model's than "
                         f"{first.path}: its settings differ ({', '.join(keys)})")
    if _signature(_metadata_tree(s)) != signature:
      raise AverageError(f"checkpoint {s.path}: its arrays' shapes differ "
                         f"from those of {first.path}")
    if _vocab_text(s.workdir) != vocab:
      raise AverageError(f"workdir {s.workdir}: its {VOCAB_FILE} differs "
                         f"from that of {first.workdir}")
  return config


def check_destination(to: str, sources: list[Source]) -> None:
  """``to`` must be new (absent or an empty directory), and neither a
  source workdir nor inside one (which would be written to)."""
  real = os.path.realpath(to)
  for s in sources:
    source = os.path.realpath(s.workdir)
    if real == source or real.startswith(source + os.sep):
      raise AverageError(f"{to} is (or is inside) the source workdir "
                         f"{s.workdir}: the average goes to a new one")
  if os.path.exists(to) and (not os.path.isdir(to) or os.listdir(to)):
    raise AverageError(f"{to} exists and is not empty: the average goes to a "
                       "new workdir")


def mean_tree(trees: list):
  """The leaf by leaf mean of ``trees`` (one structure), in float64, each
  leaf cast back to its dtype."""
  return jax.tree.map(
      lambda *xs: np.mean([np.asarray(x, np.float64) for x in xs],
                          axis=0).astype(np.asarray(xs[0]).dtype), *trees)


def _read_state(source: Source) -> dict:
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(source.path, "state"))
  return dict(restored)


def averaged_state(sources: list[Source]) -> tuple[dict, int]:
  """-> (the state tree to save, its step): the newest source's, with the
  averaged keys (``AVERAGED``) the mean over all sources."""
  states = [_read_state(s) for s in sources]
  newest = max(range(len(sources)), key=lambda i: sources[i].step)
  tree = dict(states[newest])
  for key in AVERAGED:
    if key in tree:
      tree[key] = mean_tree([s[key] for s in states])
  return tree, sources[newest].step


def average(sources: list[Source], to: str, how: str = "") -> dict:
  """Averages ``sources`` into the new workdir ``to``; -> its record (also
  ``<to>/average.json``). Every check runs before anything is read or
  written; ``how`` (e.g. "last 3") is recorded."""
  config = check_same_model(sources)
  check_destination(to, sources)
  tree, step = averaged_state(sources)
  os.makedirs(to, exist_ok=True)
  try:
    _write(to, sources, config, tree, step)
  except BaseException:
    shutil.rmtree(to, ignore_errors=True)
    raise
  record = {"averaged": how, "step": step, "workdir": to,
            "checkpoints": [s.to_dict() for s in sources]}
  _write_json(os.path.join(to, RECORD), record)
  _write_json(os.path.join(to, "results.json"),
              {**_source_results(sources[0].workdir, config), **record})
  return record


def _write(to: str, sources: list[Source], config: dict, tree: dict,
           step: int) -> None:
  for name in COPIED:
    path = os.path.join(sources[0].workdir, name)
    if os.path.isfile(path):
      shutil.copyfile(path, os.path.join(to, name))
  checkpointer = Checkpointer(to, config, max_to_keep=1)
  try:
    checkpointer.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree),
        config=ocp.args.JsonSave(config)))
    checkpointer.manager.wait_until_finished()
  finally:
    checkpointer.close()


def _source_results(workdir: str, config: dict) -> dict:
  """What the source run's results.json records of the model (task,
  flags), so ``--eval_only`` on the new workdir finds its settings."""
  results = _read_json(os.path.join(workdir, "results.json")) or {}
  kept = {k: results[k] for k in ("task", "flags") if k in results}
  kept.setdefault("task", config.get("task"))
  return kept


def _write_json(path: str, obj) -> None:
  reliability.write_atomic(path, json.dumps(obj, indent=2,
                                            ensure_ascii=False) + "\n")
