"""Benchmarks seqjax against Keras 3 (JAX backend) and PyTorch, side by side.

  python -m benchmarks.run --workload=reverse [--peers=keras,torch]
      [--reps=3] [--json=PATH] [--single_thread]
  python -m benchmarks.run --workload=attention --peers=torch
  python -m benchmarks.run --workload=sweep   # vectorized vs sequential runs
  python -m benchmarks.run --workload=startup # fresh processes, cold and warm
  python -m benchmarks.run --workload=compile_flags  # XLA:CPU flag variants
  python -m benchmarks.run --workload=decode --peers=torch,onmt \\
      --single_thread --settings=model_dir=WORKDIR

``decode`` measures decoding alone (greedy and beam search against
PyTorch's batched searches of the same model and OpenNMT-py's own model and
search; ``benchmarks/decode.py``) with tables of its own. OpenNMT-py is
benchmark-only: ``pip install --no-deps OpenNMT-py==3.5.1 configargparse
six pyonmttok`` (its pinned torch is not wanted).

``attention`` measures training alone (the attention translator against the
same model in PyTorch; ``benchmarks/attention.py``): its decoding columns
are "-".

Install the peers with ``pip install -e '.[bench]'``; a peer that is not
installed is skipped with a note. Each repetition trains every framework for
one epoch from a fresh model (first step timed separately, compile included),
then decodes with each; frameworks are interleaved and every number is the
median over repetitions. Only ratios within one run mean much on a shared
machine; the load average is recorded with the results. ``--single_thread``
runs every framework on one thread: per-core speed, which a loaded machine
disturbs least. ``python -m benchmarks.report --json=PATH`` turns the JSON
into RESULTS.md's tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.util
import sys
import time
import types

from seqjax import runner
from seqjax.errors import SeqjaxError
from seqjax.config import field

# Workload name -> (its benchmark module, modules it needs, what is missing).
WORKLOADS = {
    "reverse": ("benchmarks.reverse", (), ""),
    "translate": ("benchmarks.translate",
                  ("seqjax.data.translation", "experiments.translate"),
                  "the translate experiment (seqjax.data.translation, "
                  "experiments/translate.py) and its benchmark module "
                  "benchmarks/translate.py"),
    "attention": ("benchmarks.attention",
                  ("seqjax.data.translation", "experiments.translate",
                   "seqjax.attention"),
                  "the translate experiment's data pipeline and attention "
                  "(seqjax.attention) and its benchmark module "
                  "benchmarks/attention.py"),
    # N reverse runs one after another vs one vectorized group.
    "sweep": ("benchmarks.sweep", ("seqjax.vectorized",),
              "vectorized groups (seqjax.vectorized) and benchmarks/sweep.py"),
    "decode": ("benchmarks.decode",
               ("seqjax.decoding", "seqjax.translation", "experiments.translate"),
               "beam search (seqjax.decoding), the translation API and "
               "benchmarks/decode.py"),
    # XLA:CPU compile flags: compile time against speed.
    "compile_flags": ("benchmarks.compile_flags", (),
                      "benchmarks/compile_flags.py"),
    # Fresh processes of the binaries, cold and warm compilation cache.
    "startup": ("benchmarks.startup", ("experiments.translate",),
                "the translate experiment and benchmarks/startup.py"),
}
PEER_PACKAGES = {"keras": "keras", "torch": "torch", "onmt": "onmt"}
PEER_INSTALL = {"onmt": "pip install --no-deps OpenNMT-py==3.5.1 "
                        "configargparse six pyonmttok"}

# Settings a flag can override; 0 keeps the workload's default.
SIZE_FLAGS = ("train_samples", "decode_n", "decode_batch", "loop_n",
              "ceiling_n")


@dataclasses.dataclass
class BenchmarkConfig:
  workload: str = field("reverse", f"One of {', '.join(WORKLOADS)}.")
  peers: str = field("keras,torch", "Comma-separated peers: keras, torch, "
                     "onmt (OpenNMT-py: decode) (empty: seqjax "
                     "alone).")
  reps: int = field(3, "Repetitions of every measurement (medians reported).")
  json: str = field("", "Write the results as JSON here.")
  train_samples: int = field(0, "Training samples per epoch (0: the "
                             "workload's default).")
  decode_n: int = field(0, "Sequences to decode in batches (0: default).")
  decode_batch: int = field(0, "Batch size of batched decoding (0: default).")
  loop_n: int = field(0, "Sequences decoded one at a time (0: default).")
  ceiling_n: int = field(0, "Size n of the n x n matmul ceiling (0: default).")
  single_thread: bool = field(False, "Every framework on one thread (XLA "
                              "without multi-threaded Eigen, OMP/MKL 1): "
                              "per-core speed, steadier on a loaded machine, "
                              "where PyTorch's default threads can collapse.")
  seed: int = field(0, "Seed of data and models.")
  data_path: str = field("", "translate, attention: the pair file (empty: "
                         "$SEQJAX_CMN_PATH, else ../shared/data/cmn-eng/"
                         "cmn.txt beside the repository).")
  settings: str = field("", "Overrides of the workload's Settings fields, "
                        "comma-separated name=value (e.g. attention="
                        "bahdanau,units=128,bidirectional=false).")

  def peer_list(self) -> list[str]:
    return [p.strip() for p in self.peers.split(",") if p.strip()]

  def validate(self) -> list[str]:
    errors = []
    if self.workload not in WORKLOADS:
      errors.append(f"--workload must be one of {', '.join(WORKLOADS)}; got "
                    f"{self.workload!r}")
    unknown = [p for p in self.peer_list() if p not in PEER_PACKAGES]
    if unknown:
      errors.append(f"--peers: unknown {', '.join(unknown)}; expected some of "
                    f"{', '.join(PEER_PACKAGES)}")
    if self.reps < 1:
      errors.append(f"--reps must be positive; got {self.reps}")
    for name in SIZE_FLAGS:
      if getattr(self, name) < 0:
        errors.append(f"--{name} must be >= 0; got {getattr(self, name)}")
    return errors


def parse_settings(text: str, settings_cls) -> dict:
  """``--settings``' "name=value,..." -> {name: value of the field's type};
  a SeqjaxError names an unknown field or a value of the wrong type."""
  fields = {f.name: f for f in dataclasses.fields(settings_cls)}
  defaults = settings_cls()
  out = {}
  for item in filter(None, (i.strip() for i in text.split(","))):
    name, sep, value = item.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or name not in fields or name == "seed":
      raise SeqjaxError(f"--settings: {item!r} is not name=value of a "
                        f"setting; settings: {', '.join(sorted(fields))} "
                        "(the seed is --seed)")
    kind = type(getattr(defaults, name))
    try:
      if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        out[name] = value.lower() in ("true", "1")
      else:
        out[name] = kind(value)
    except ValueError as e:
      raise SeqjaxError(f"--settings: {name}={value!r} is not a "
                        f"{kind.__name__}") from e
  return out


def load_workload(name: str):
  """The workload's module, or a SeqjaxError saying what it still needs."""
  module, needs, what = WORKLOADS[name]
  missing = [m for m in needs + (module,) if not _module_exists(m)]
  if missing:
    raise SeqjaxError(
        f"--workload={name} is not available yet: it needs {what} "
        f"(missing: {', '.join(missing)}). Available now: "
        f"{', '.join(n for n in WORKLOADS if _available(n))}.")
  return importlib.import_module(module)


def _module_exists(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:
    return False


def _available(name: str) -> bool:
  module, needs, _ = WORKLOADS[name]
  return all(_module_exists(m) for m in needs + (module,))


def select_peers(requested: list[str]) -> tuple[list[str], list[str]]:
  """-> (peers to run, notes on those skipped because not installed)."""
  peers, notes = [], []
  for p in requested:
    if _module_exists(PEER_PACKAGES[p]):
      peers.append(p)
    else:
      how = PEER_INSTALL.get(p, "pip install -e '.[bench]'")
      notes.append(f"peer {p} skipped: the {PEER_PACKAGES[p]} package is not "
                   f"installed ({how})")
  return peers, notes


def run(config: BenchmarkConfig) -> dict:
  runner.check(config)
  module = load_workload(config.workload)
  peers, notes = select_peers(config.peer_list())
  for note in notes:
    print(f"Note: {note}")
  overrides = {n: getattr(config, n) for n in SIZE_FLAGS if getattr(config, n)}
  if config.data_path:
    overrides["data_path"] = config.data_path
  fields = {f.name for f in dataclasses.fields(module.Settings)}
  for name in overrides:
    if name not in fields:
      raise SeqjaxError(f"--{name} does not apply to --workload="
                        f"{config.workload}")
  overrides.update(parse_settings(config.settings, module.Settings))
  settings = module.Settings(seed=config.seed, **overrides)
  if hasattr(module, "run_benchmark"):  # its own measurement (sweep)
    return module.run_benchmark(config, settings)
  from benchmarks import harness  # imports JAX: after the flags are checked
  load_before = harness.load_average()
  t0 = time.perf_counter()
  workload = module.Workload(settings)
  if hasattr(module, "measure_workload"):  # a workload of its own kind
    return _run_own(config, module, workload, peers, notes, load_before, t0)
  frameworks = (["seqjax"] + list(getattr(workload, "variants", ()))
                + [p for p in peers if p in workload.frameworks()])
  print(f"Workload {config.workload}: {settings}")
  print(f"Frameworks: {', '.join(frameworks)}; {config.reps} repetitions; "
        f"load average {load_before}")
  results, worker_notes = harness.measure(workload, frameworks, config.reps,
                                          single_thread=config.single_thread)
  notes += worker_notes
  machine = results["seqjax"].pop("machine")
  rows = harness.ratios(results, workload.targets)
  for variant in getattr(workload, "variants", ()):
    rows += harness.ratios(results, workload.targets, ours=variant)
  first = results["seqjax"]["first_step_s"]
  first_ok = bool(first < workload.first_step_max_s)
  print()
  print(harness.format_table(results))
  print()
  print(harness.format_ratios(rows))
  checks = getattr(workload, "compare_checks", lambda _: [])(results)
  for line in checks:
    print(line)
  if workload.first_step_max_s != float("inf"):
    print(f"{'first_step_s':26s} {first:6.3f} s (target < "
          f"{workload.first_step_max_s} s): "
          f"{'met' if first_ok else 'MISSED'}")
  entry = {
      "settings": dataclasses.asdict(settings),
      "single_thread": config.single_thread,
      "train_flops_per_sample": workload.train_flops_per_sample,
      "checks": checks, "results": results, "ratios": rows,
      "first_step_target": {"max_s": (
          None if workload.first_step_max_s == float("inf")
          else workload.first_step_max_s), "seqjax_s": first,
                            "met": first_ok}}
  definitions = [harness.FIRST_STEP, harness.TRAIN_COMPILES,
                 "ratio: the median of each repetition's seqjax over the "
                 "same repetition's best peer; range: their least and "
                 "greatest"]
  return _record(config, entry, machine, notes, definitions, load_before, t0)


def _run_own(config: BenchmarkConfig, module, workload, peers: list[str],
             notes: list[str], load_before, t0: float) -> dict:
  """A workload that measures and prints by itself
  (``module.measure_workload``); the run's record around its entry."""
  print(f"Workload {config.workload}: {workload.s}")
  print(f"Load average {load_before}")
  entry, machine, worker_notes = module.measure_workload(
      workload, peers, config.reps, config.single_thread)
  return _record(config, entry, machine, notes + worker_notes,
                 list(getattr(module, "DEFINITIONS", [])), load_before, t0)


def _record(config: BenchmarkConfig, entry: dict, machine: dict,
            notes: list[str], definitions: list[str], load_before,
            t0: float) -> dict:
  """The run's record (written with --json) around the workload's entry."""
  from benchmarks import harness
  load_after = harness.load_average()
  print(f"Load average before {load_before}, after {load_after}; "
        f"{time.perf_counter() - t0:.0f} s")
  out = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "machine": {**machine, "load_before": load_before,
                  "load_after": load_after},
      "workloads": {config.workload: entry},
      "notes": notes, "definitions": definitions,
      "seconds": time.perf_counter() - t0,
  }
  if config.json:
    runner.write_json_atomic(config.json, out)
    print(f"Wrote {config.json}")
  return out


def _exit_on_sigterm():
  # SIGTERM ends the run through the finally blocks, which stop the workers.
  import signal
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


if __name__ == "__main__":
  from experiments import common
  _exit_on_sigterm()
  # common.main takes a task-like object: its name, config class and run.
  common.main(types.SimpleNamespace(name="benchmarks.run",
                                    config_cls=BenchmarkConfig, run=run))
