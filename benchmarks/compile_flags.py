"""The compile_flags workload: XLA:CPU compile flags, compile time against
speed, each variant in fresh processes, variants interleaved.

  python -m benchmarks.run --workload=compile_flags [--reps=2] [--json=PATH]
      [--settings=attention_samples=3000,reverse=true,variants=a+b]

A variant is a set of ``XLA_FLAGS`` (``VARIANTS``): XLA's defaults (LLVM at
-O3), none (the binaries add ``seqjax.compile_cache.CPU_FLAGS``; the
attention child's record shows the flags in effect), that with
XLA:CPU's older fusion emitters, and the tests' flags
(``tests/conftest.py``). Each repetition runs, per variant:

- attention: ``benchmarks.run --workload=attention --single_thread
  --peers=`` (one CPU): its first step (every bucket's train program
  compiled, then one call; no compilation cache) and its training
  samples/s over one epoch of ``attention_samples`` pairs;
- decode: ``benchmarks.run --workload=decode --single_thread`` on its
  random attention model (20 steps a sentence, ``decode_sentences`` of
  them, 50 slots): the in-flight greedy and beam-5 decoders' first call
  (compiles included) and sentences/s;
- reverse: the README's first command, ``python -m experiments.reverse``
  with its defaults and no compilation cache: wall seconds and the
  parameter hash and accuracy it prints.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import sys
import tempfile
import time

from seqjax import compile_cache
from seqjax import runner

from benchmarks import harness
from benchmarks.startup import run_child

NAME = "compile_flags"
VARIANTS = {
    "xla_default": "--xla_backend_optimization_level=3",
    "binaries": "",  # the binaries' own choice: compile_cache.CPU_FLAGS
    "legacy_emitters": ("--xla_backend_optimization_level=1 "
                        "--xla_cpu_use_fusion_emitters=false"),
    "tests": ("--xla_backend_optimization_level=0 "
              "--xla_cpu_use_fusion_emitters=false"),
}
DEFINITIONS = [
    "attention_first_step_s: the attention workload's first_step_s (one "
    "CPU; its bucket programs compiled, then one call; no cache)",
    "attention_samples_per_s: its train_samples_per_s over one epoch",
    "greedy/beam5 first call s, sent/s: the decode workload's in-flight "
    "decoders at 50 slots (one CPU): first call with its compiles, and "
    "sentences/s (best of 2 passes)",
    "reverse_wall_s: python -m experiments.reverse with its defaults, "
    "--compilation_cache_dir= (no cache), process start to exit",
    "values are medians over repetitions; *_vs_xla_default: the median of "
    "each repetition's ratio to xla_default's",
]


@dataclasses.dataclass
class Settings:
  attention_samples: int = 3000
  decode_sentences: int = 300     # 0: no decode row
  reverse: bool = True            # the reverse row
  variants: str = "+".join(VARIANTS)  # "+"-separated names of VARIANTS
  timeout_s: int = 1800
  seed: int = 0


def _attention(s: Settings, flags: str, tmp: str) -> dict:
  path = os.path.join(tmp, "attention.json")
  run_child(["benchmarks.run", "--workload=attention", "--peers=",
             "--reps=1", "--single_thread",
             f"--settings=num_samples={s.attention_samples}",
             f"--json={path}"], s.timeout_s, XLA_FLAGS=flags)
  with open(path, encoding="utf-8") as f:
    out = json.load(f)
  res = out["workloads"]["attention"]["results"]["seqjax"]
  return {"xla_flags_in_effect": out["machine"]["XLA_FLAGS"],
          "attention_first_step_s": res["first_step_s"],
          "attention_samples_per_s": res["train_samples_per_s"],
          "attention_train_loss": res["train_loss"]}


def _decode(s: Settings, flags: str, tmp: str) -> dict:
  path = os.path.join(tmp, "decode.json")
  run_child(["benchmarks.run", "--workload=decode", "--peers=", "--reps=1",
             "--single_thread", f"--settings=batches=50,steps=20,passes=2,"
             f"num_sentences={s.decode_sentences}", f"--json={path}"],
            s.timeout_s, XLA_FLAGS=flags)
  with open(path, encoding="utf-8") as f:
    res = json.load(f)["workloads"]["decode"]["results"]["seqjax"]
  out = {}
  for kind in ("greedy_inflight", "beam5_inflight"):
    out[f"{kind}_first_call_s"] = res["warmup"][f"{kind}@50"]["first_call_s"]
    out[f"{kind}_per_s"] = res["median"][f"{kind}@50"]["sentences_per_s"]
  return out


def _reverse(s: Settings, flags: str, tmp: str) -> dict:
  child = run_child(["experiments.reverse", "--compilation_cache_dir=",
                     f"--workdir={os.path.join(tmp, 'reverse')}"],
                    s.timeout_s, XLA_FLAGS=flags)
  sha = re.search(r"sha256 ([0-9a-f]+)", child["stdout"])
  accuracy = re.search(r"Accuracy: ([\d.]+)%", child["stdout"])
  return {"reverse_wall_s": child["wall_s"],
          "reverse_sha256": sha.group(1) if sha else None,
          "reverse_accuracy": float(accuracy.group(1)) if accuracy else None}


def measure(s: Settings, reps: int) -> dict:
  names = s.variants.split("+")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise ValueError(f"variants: {unknown} not among {list(VARIANTS)}")
  per_rep = {n: [] for n in names}
  for rep in range(reps):
    for name in names[rep % len(names):] + names[:rep % len(names)]:
      with tempfile.TemporaryDirectory(prefix="seqjax-flags-") as tmp:
        row = _attention(s, VARIANTS[name], tmp)
        if s.decode_sentences:
          row.update(_decode(s, VARIANTS[name], tmp))
        if s.reverse:
          row.update(_reverse(s, VARIANTS[name], tmp))
      print(f"  rep {rep + 1}/{reps} {name}: " + ", ".join(
          f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
          for k, v in row.items()), flush=True)
      per_rep[name].append(row)
  return {name: _summary(rows, per_rep.get("xla_default"))
          for name, rows in per_rep.items()}


def _summary(rows: list[dict], base: list[dict]) -> dict:
  out = {"flags": None, "reps": rows}
  for key, value in rows[0].items():
    if isinstance(value, float) and key != "reverse_accuracy":
      out[key] = harness.median([r[key] for r in rows])
      if base and key.endswith(("_s", "_per_s")):
        out[f"{key}_vs_xla_default"] = harness.median(
            [r[key] / b[key] for r, b in zip(rows, base)])
    else:
      out[key] = sorted({r[key] for r in rows}, key=str)
  return out


COLUMNS = ("attention_first_step_s", "attention_samples_per_s",
           "greedy_inflight_first_call_s", "greedy_inflight_per_s",
           "beam5_inflight_first_call_s", "beam5_inflight_per_s",
           "reverse_wall_s", "reverse_accuracy", "reverse_sha256")


def _row(name: str, r: dict) -> list[str]:
  cells = [name, f"`{r['flags']}`"]
  for key in COLUMNS:
    if key not in r:
      cells.append("-")
    elif isinstance(r[key], list):
      cells.append(" / ".join(str(v)[:12] for v in r[key]))
    else:
      ratio = r.get(f"{key}_vs_xla_default")
      cells.append(f"{r[key]:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
  return cells


def format_markdown(out: dict) -> str:
  header = ["variant", "XLA_FLAGS", "attention 1st step s",
            "attention samples/s", "greedy 1st call s", "greedy sent/s",
            "beam5 1st call s", "beam5 sent/s", "reverse wall s",
            "reverse accuracy %", "reverse sha256"]
  lines = ["| " + " | ".join(header) + " |",
           "| --- | --- |" + " ---: |" * 8 + " --- |"]
  lines += ["| " + " | ".join(_row(n, r)) + " |" for n, r in out.items()]
  return "\n".join(lines)


def run_benchmark(config, settings: Settings) -> dict:
  """``benchmarks.run``'s entry for --workload=compile_flags (--peers
  does not apply)."""
  load_before = harness.load_average()
  t0 = time.perf_counter()
  print(f"Workload {NAME}: {settings}; {config.reps} repetitions")
  out = measure(settings, config.reps)
  for name in out:
    out[name]["flags"] = VARIANTS[name] or (
        "none: the binaries add " + " ".join(compile_cache.CPU_FLAGS))
  table = format_markdown(out)
  print()
  print(table)
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "machine": {**harness.machine_info(), "load_before": load_before,
                  "load_after": harness.load_average()},
      "workloads": {NAME: {"settings": dataclasses.asdict(settings),
                           "results": out, "markdown": table}},
      "notes": [], "definitions": DEFINITIONS,
      "seconds": time.perf_counter() - t0,
  }
  if config.json:
    runner.write_json_atomic(config.json, result)
    print(f"Wrote {config.json}")
  return result
