"""The startup workload: how long a new user waits, each binary a fresh
process, cold (an empty compilation cache) and warm (the same cache again).

  python -m benchmarks.run --workload=startup [--json=PATH]
      [--settings=reverse_samples=3200,attention_samples=600,...]

Rows:

- reverse: the README's first command, ``python -m experiments.reverse``
  with its defaults (``reverse_samples`` > 0 trains fewer sequences);
- attention: ``--flagfile=configs/translate_attention_word.flags
  --num_samples=6000 --epochs=1 --num_test=300 --num_dev=100``;
- translate: ``python -m experiments.translate --workdir=W
  --translate="I'm hungry."`` on the cold attention run's workdir;
- torch: the attention model's PyTorch peer (``benchmarks.startup_torch``):
  import torch, build, one step on random ids (no data loading).

Every binary has a compilation cache of its own (a fresh temporary folder,
``--compilation_cache_dir``): its first run is cold, its second warm. The
children run with ``JAX_LOG_COMPILES=1``; their stderr's "Finished XLA
compilation" and "Persistent compilation cache hit" lines count the
programs compiled and read back. Times are wall-clock seconds from the
parent's clock just before ``Popen`` (interpreter start and imports
included).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Optional

from seqjax import runner

NAME = "startup"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTENTION_FLAGFILE = os.path.join("configs", "translate_attention_word.flags")
ROWS = ("reverse", "attention", "translate", "torch")

DEFINITIONS = [
    "wall_s: process start (the parent's time.time() before Popen) to the "
    "child's exit",
    "first_step_s: process start to the end of the first train call (its "
    "--steps_per_call steps, 25 by default): the child's absl timestamp of "
    "its 'Training N steps' line plus results.json's first_call_seconds "
    "(the call's compile and run); torch: to the end of its one step",
    "compile_s: seconds of XLA compilation over the whole run (training and "
    "its evaluation): results.json's compile_seconds where the run records "
    "it (compile_source 'results.json'), else the sum of the 'Finished XLA "
    "compilation ... in X sec' lines of programs not read from the cache "
    "(compile_source 'log')",
    "programs_compiled: 'Finished XLA compilation' lines less 'Persistent "
    "compilation cache hit' lines; cache_hits: the latter; cache_read_s: "
    "the seconds of the finished lines of cache hits",
    "torch import_s: process start to the end of 'import torch'; build_s: "
    "to the model and its optimizer built",
]


@dataclasses.dataclass
class Settings:
  reverse_samples: int = 0        # 0: the binary's default (100,000)
  attention_samples: int = 6000
  num_test: int = 300
  num_dev: int = 100
  sentence: str = "I'm hungry."
  # More flags for a row's binary, space-separated (after the flag file, so
  # they override it): smaller models for tests.
  reverse_flags: str = ""
  attention_flags: str = ""
  torch: bool = True              # the PyTorch row (when torch is installed)
  data_path: str = ""             # empty: the translate binary's default
  timeout_s: int = 3600           # per child process
  seed: int = 0


_ABSL_TIME = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d\.\d+) ")
_FINISHED = re.compile(r"Finished XLA compilation of (?:jit\()?([^) ]+)\)? "
                       r"in ([0-9.eE+-]+) sec")
_HIT = re.compile(r"Persistent compilation cache hit for '(?:jit_)?([^']+)'")
_TRAINING = re.compile(r"\] Training \d+ steps")
_EMBEDDING = re.compile(r"^(src|tgt)_embedding\s+[\d,]+\s+embedding "
                        r"\((\d+),", re.M)


def absl_time(line: str, near: float) -> Optional[float]:
  """The epoch seconds of an absl log line (local time, no year: the year
  of ``near``), or None for another line."""
  m = _ABSL_TIME.match(line)
  if not m:
    return None
  month, day, hour, minute, sec = m.groups()
  year = time.localtime(near).tm_year
  whole = time.mktime((year, int(month), int(day), int(hour), int(minute),
                       0, 0, 0, -1))
  return whole + float(sec)


def parse_compiles(stderr: str) -> dict:
  """Programs compiled and read from the cache, from JAX_LOG_COMPILES'
  lines: a hit line comes before its program's finished line."""
  pending: dict[str, int] = {}
  compiled = hits = 0
  compile_s = read_s = 0.0
  for line in stderr.splitlines():
    hit = _HIT.search(line)
    if hit:
      pending[hit.group(1)] = pending.get(hit.group(1), 0) + 1
      continue
    done = _FINISHED.search(line)
    if not done:
      continue
    name, secs = done.group(1), float(done.group(2))
    if pending.get(name):
      pending[name] -= 1
      hits += 1
      read_s += secs
    else:
      compiled += 1
      compile_s += secs
  return {"programs_compiled": compiled, "cache_hits": hits,
          "log_compile_s": compile_s, "cache_read_s": read_s}


def training_start(stderr: str, near: float) -> Optional[float]:
  """The epoch seconds of the loop's 'Training N steps' line."""
  for line in stderr.splitlines():
    if _TRAINING.search(line):
      return absl_time(line, near)
  return None


def _read_results(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _child_env(**overrides) -> dict:
  env = dict(os.environ, JAX_LOG_COMPILES="1", **overrides)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  return env


def run_child(args: list[str], timeout_s: int, **env) -> dict:
  """``python -m args...`` from the checkout, ``env`` added to its
  environment; its times and output."""
  t0 = time.time()
  proc = subprocess.run([sys.executable, "-m"] + args, cwd=ROOT,
                        env=_child_env(**env), capture_output=True, text=True,
                        timeout=timeout_s, check=False)
  wall = time.time() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(args[:2])} exited {proc.returncode}:\n"
                       f"{proc.stderr[-3000:]}")
  return {"t0": t0, "wall_s": wall, "stdout": proc.stdout,
          "stderr": proc.stderr}


def measure_binary(args: list[str], workdir: str, cache: str,
                   timeout_s: int, trains: bool = True) -> dict:
  """One run of a seqjax binary into ``workdir`` with the cache ``cache``;
  ``trains``: its results.json is its own (not a translate run's)."""
  child = run_child(args + [f"--workdir={workdir}",
                            f"--compilation_cache_dir={cache}"], timeout_s)
  out = {"wall_s": child["wall_s"], **parse_compiles(child["stderr"])}
  results = _read_results(workdir) if trains else {}
  start = training_start(child["stderr"], child["t0"])
  first_call = results.get("first_call_seconds")
  out["first_step_s"] = (start + first_call - child["t0"]
                         if start is not None and first_call else None)
  if "compile_seconds" in results:
    out["compile_s"], out["compile_source"] = (results["compile_seconds"],
                                               "results.json")
  else:
    out["compile_s"], out["compile_source"] = out["log_compile_s"], "log"
  out["stdout"] = child["stdout"]
  return out


def _reverse_args(s: Settings) -> list[str]:
  args = ["experiments.reverse"]
  return args + ([f"--n_samples={s.reverse_samples}"]
                 if s.reverse_samples else []) + _seed_args(s) + (
                     s.reverse_flags.split())


def _seed_args(s: Settings) -> list[str]:
  # Seed 0 is the binaries' default: the README's commands as written.
  return [f"--seed={s.seed}"] if s.seed else []


def _attention_args(s: Settings) -> list[str]:
  return ["experiments.translate", f"--flagfile={ATTENTION_FLAGFILE}",
          f"--num_samples={s.attention_samples}", "--epochs=1",
          f"--num_test={s.num_test}", f"--num_dev={s.num_dev}"
          ] + _seed_args(s) + _data_args(s) + s.attention_flags.split()


def _data_args(s: Settings) -> list[str]:
  return [f"--data_path={s.data_path}"] if s.data_path else []


def vocab_sizes(stdout: str) -> dict:
  """The attention run's embedding rows (its model summary), by side."""
  return {side: int(n) for side, n in _EMBEDDING.findall(stdout)}


def measure_torch(vocab: dict, timeout_s: int) -> dict:
  args = ["benchmarks.startup_torch"] + [
      f"--{side}_vocab={n}" for side, n in sorted(vocab.items())]
  child = run_child(args, timeout_s)
  stamps = json.loads(child["stdout"].strip().splitlines()[-1])
  t0 = child["t0"]
  return {"wall_s": child["wall_s"],
          "import_s": stamps["t_imported"] - t0,
          "build_s": stamps["t_built"] - t0,
          "first_step_s": stamps["t_first_step"] - t0,
          "torch": stamps["torch"], "threads": stamps["threads"],
          "shapes": stamps["shapes"]}


def _log(*args):
  print(*args, flush=True)


def measure(s: Settings, tmp: str, with_torch: bool) -> dict:
  """Cold then warm, every row; the attention row's cold workdir serves
  both translate runs."""
  out = {row: {} for row in ROWS if row != "torch" or with_torch}
  for phase in ("cold", "warm"):
    _log(f"{phase}: reverse ...")
    out["reverse"][phase] = measure_binary(
        _reverse_args(s), os.path.join(tmp, f"reverse_{phase}"),
        os.path.join(tmp, "cache_reverse"), s.timeout_s)
    _log(f"{phase}: attention ...")
    out["attention"][phase] = measure_binary(
        _attention_args(s), os.path.join(tmp, f"attention_{phase}"),
        os.path.join(tmp, "cache_attention"), s.timeout_s)
    _log(f"{phase}: translate ...")
    out["translate"][phase] = measure_binary(
        ["experiments.translate", f"--translate={s.sentence}"],
        os.path.join(tmp, "attention_cold"),
        os.path.join(tmp, "cache_translate"), s.timeout_s, trains=False)
    if with_torch:
      _log(f"{phase}: torch ...")
      out["torch"][phase] = measure_torch(
          vocab_sizes(out["attention"]["cold"]["stdout"]), s.timeout_s)
  out["translate"]["output"] = out["translate"]["cold"]["stdout"].strip()
  for row in ("reverse", "attention", "translate"):
    for phase in ("cold", "warm"):
      out[row][phase].pop("stdout")
  return out


def _cell(value, fmt: str) -> str:
  """``value`` in a 14-wide column; None as "-"."""
  return f"{value:14{fmt}}" if value is not None else f"{'-':>14s}"


def _columns(r: dict) -> list:
  c, w = r["cold"], r["warm"]
  return [c["wall_s"], w["wall_s"], c.get("first_step_s"),
          w.get("first_step_s"), c.get("compile_s"), w.get("compile_s"),
          c.get("programs_compiled"), w.get("programs_compiled")]


HEADER = ["wall cold", "wall warm", "1st step cold", "1st step warm",
          "compile cold", "compile warm", "programs cold", "programs warm"]


def format_table(out: dict) -> str:
  lines = [f"{'':10s}" + "".join(f"{h:>14s}" for h in HEADER)]
  for row in ROWS:
    if row in out:
      vals = _columns(out[row])
      lines.append(f"{row:10s}" + "".join(
          _cell(v, "d" if i >= 6 else ".1f") for i, v in enumerate(vals)))
  if "torch" in out:
    t = out["torch"]
    lines.append(f"torch import: {t['cold']['import_s']:.1f} s cold, "
                 f"{t['warm']['import_s']:.1f} s warm")
  return "\n".join(lines)


def format_markdown(out: dict) -> str:
  """RESULTS.md's table (seconds; programs: XLA programs compiled)."""
  lines = ["| | " + " | ".join(HEADER) + " |",
           "| --- |" + " ---: |" * len(HEADER)]
  for row in ROWS:
    if row in out:
      vals = [("-" if v is None else (str(v) if i >= 6 else f"{v:.1f}"))
              for i, v in enumerate(_columns(out[row]))]
      lines.append(f"| {row} | " + " | ".join(vals) + " |")
  return "\n".join(lines)


def _torch_installed() -> bool:
  import importlib.util
  return importlib.util.find_spec("torch") is not None


def run_benchmark(config, settings: Settings) -> dict:
  """``benchmarks.run``'s entry for --workload=startup (--reps does not
  apply: one cold and one warm run of each row; --peers=torch or not
  selects the PyTorch row)."""
  from benchmarks import harness
  load_before = harness.load_average()
  t0 = time.perf_counter()
  print(f"Workload startup: {settings}")
  print(f"Load average {load_before}")
  notes = ["reps does not apply: one cold and one warm run of each row"]
  with_torch = (settings.torch and "torch" in config.peer_list()
                and _torch_installed())
  if settings.torch and "torch" in config.peer_list() and not with_torch:
    notes.append("torch row skipped: torch is not installed")
  with tempfile.TemporaryDirectory(prefix="seqjax-startup-") as tmp:
    out = measure(settings, tmp, with_torch)
  table = format_table(out)
  print()
  print(table)
  load_after = harness.load_average()
  print(f"Load average before {load_before}, after {load_after}; "
        f"{time.perf_counter() - t0:.0f} s")
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "machine": {**harness.machine_info(), "avx512": avx512(),
                  "load_before": load_before, "load_after": load_after},
      "workloads": {NAME: {"settings": dataclasses.asdict(settings),
                           "results": out, "table": table,
                           "markdown": format_markdown(out)}},
      "notes": notes, "definitions": DEFINITIONS,
      "seconds": time.perf_counter() - t0,
  }
  if config.json:
    runner.write_json_atomic(config.json, result)
    print(f"Wrote {config.json}")
  return result


def avx512() -> Optional[bool]:
  """Whether the CPU has AVX-512 (any avx512 flag), None where
  /proc/cpuinfo cannot say."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return "avx512" in line
  except OSError:
    pass
  return None
