"""The sweep workload: N reverse runs one after another vs one vectorized
group (``seqjax.vectorized``), in one process.

  python -m benchmarks.run --workload=sweep [--train_samples=16000]
      [--settings=members=8,more=16;32] [--json=PATH]

Each run is the encoder-decoder tutorial's model and batch (51 features,
6 -> 3, LSTM 128, batch 32, Adam), seed i and a learning rate of 1e-3 or
3e-3 (alternating), trained for ``train_samples`` samples (one epoch of
``train_samples / 32`` steps; the tutorial's 100,000 would take the
sequential side ~8 minutes here: the rate is what is compared).
"One after another" is ``train.fit`` for each run (its own compile, as a
sweep pays it); "vectorized" is ``vectorized.fit_group`` over all of them.
Reported: the total training samples/s of all runs (compiles included)
and in the steady state (after each fit's first call), their ratio, and the
memory of the group's compiled call (arguments + temporaries, from XLA's
memory analysis) for ``members`` and each of ``more`` members.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import time

import jax
import numpy as np

from seqjax import runner
from seqjax import train as train_lib
from seqjax import vectorized
from seqjax.data import reverse as reverse_data
from seqjax.models import ModelSettings, Seq2Seq

NAME = "sweep"
TARGET = 4.0   # vectorized over one after another, 8 members, steady


@dataclasses.dataclass
class Settings:
  n_features: int = 51
  n_steps_in: int = 6
  n_steps_out: int = 3
  units: int = 128
  batch_size: int = 32
  train_samples: int = 16_000
  members: int = 8
  more: str = "16;32"       # further group sizes, vectorized only
  steps_per_call: int = 25
  seed: int = 0


def _lr(i: int) -> float:
  return (1e-3, 3e-3)[i % 2]


class _Runs:
  def __init__(self, s: Settings, n: int):
    self.s = s
    self.model = Seq2Seq(src_vocab=s.n_features, tgt_vocab=s.n_features,
                         settings=ModelSettings(units=s.units))
    self.data = [reverse_data.generate(
        np.random.default_rng([s.seed + i, 0]), s.train_samples, s.n_steps_in,
        s.n_steps_out, s.n_features) for i in range(n)]
    d = self.data[0]
    self.params = [jax.jit(self.model.init)(jax.random.key(s.seed + i),
                                            d["src"][:1], d["dec_in"][:1])
                   for i in range(n)]
    self.loss_fn = train_lib.make_seq2seq_loss(self.model)
    self.configs = [train_lib.FitConfig(
        batch_size=s.batch_size, epochs=1, seed=s.seed + i,
        steps_per_call=s.steps_per_call, log_every_steps=0,
        nonfinite="stop", progress="none") for i in range(n)]

  def group(self):
    tx = vectorized.make_optimizer("adam")
    return vectorized.init_group(
        self.model, [jax.tree.map(np.array, p) for p in self.params], tx,
        [{"learning_rate": _lr(i)} for i in range(len(self.params))])


def _rate(samples: float, seconds: float) -> float:
  """0 when there was no steady call (a run of one call)."""
  return samples / seconds if seconds > 0 else 0.0


def _sequential(runs: _Runs) -> dict:
  total = steady = 0.0
  steady_steps = steps = 0
  for i, (p, d, c) in enumerate(zip(runs.params, runs.data, runs.configs)):
    state = train_lib.create_train_state(
        runs.model, jax.tree.map(np.array, p),
        train_lib.make_optimizer("adam", _lr(i)))
    t0 = time.perf_counter()
    _, stats = train_lib.fit(state, d, runs.loss_fn, c)
    total += time.perf_counter() - t0
    steady += stats.steady_seconds
    steady_steps += stats.steady_steps
    steps += stats.steps_run
  b = runs.s.batch_size
  return {"runs": len(runs.params), "seconds": total,
          "samples_per_s": steps * b / total,
          "steady_samples_per_s": _rate(steady_steps * b, steady)}


def _memory(runs: _Runs, n: int) -> dict:
  s = runs.s
  group = jax.eval_shape(lambda: _Runs.group(runs))
  group = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n,) + x.shape[1:],
                                                      x.dtype), group)
  data = jax.tree.map(lambda a: jax.ShapeDtypeStruct((n,) + a.shape, a.dtype),
                      runs.data[0])
  k = s.steps_per_call
  call = vectorized.make_multi_step(runs.loss_fn, "stop")
  mem = call.lower(group, data,
                   jax.ShapeDtypeStruct((n, k, s.batch_size), np.int32),
                   jax.ShapeDtypeStruct((n, k), bool),
                   jax.ShapeDtypeStruct((n,), bool)).compile().memory_analysis()
  if mem is None:
    return {}
  return {"argument_bytes": mem.argument_size_in_bytes,
          "temp_bytes": mem.temp_size_in_bytes,
          "total_bytes": mem.argument_size_in_bytes + mem.temp_size_in_bytes,
          "data_bytes": sum(x.size * x.dtype.itemsize
                            for x in jax.tree.leaves(data))}


def _vectorized(runs: _Runs) -> dict:
  group = runs.group()
  data = vectorized.stack(runs.data)
  t0 = time.perf_counter()
  group, results = vectorized.fit_group(group, data, runs.loss_fn,
                                        runs.configs)
  seconds = time.perf_counter() - t0
  b, n = runs.s.batch_size, len(runs.params)
  stats = results[0].stats
  return {"runs": n, "seconds": seconds,
          "samples_per_s": n * stats.steps_run * b / seconds,
          "steady_samples_per_s": _rate(n * stats.steady_steps * b,
                                        stats.steady_seconds),
          "first_call_s": stats.first_call_seconds,
          "compiles": stats.compiles,
          "memory": _memory(runs, n)}


def sizes(s: Settings) -> list[int]:
  return [int(x) for x in s.more.split(";") if x.strip()]


def measure(s: Settings, log=print) -> dict:
  runs = _Runs(s, max([s.members] + sizes(s)))
  base = _Runs.__new__(_Runs)
  base.__dict__.update(runs.__dict__)
  for key in ("data", "params", "configs"):
    setattr(base, key, getattr(runs, key)[:s.members])
  log(f"{s.members} runs one after another ...")
  seq = _sequential(base)
  log(f"  {seq['samples_per_s']:,.0f} samples/s "
      f"({seq['steady_samples_per_s']:,.0f} steady)")
  out = {"sequential": seq, "vectorized": {}}
  for n in [s.members] + sizes(s):
    group = _Runs.__new__(_Runs)
    group.__dict__.update(runs.__dict__)
    for key in ("data", "params", "configs"):
      setattr(group, key, getattr(runs, key)[:n])
    log(f"{n} members vectorized ...")
    vec = _vectorized(group)
    out["vectorized"][str(n)] = vec
    log(f"  {vec['samples_per_s']:,.0f} samples/s "
        f"({vec['steady_samples_per_s']:,.0f} steady), memory "
        f"{vec['memory'].get('total_bytes', 0) / 2**20:.1f} MiB")
  v8 = out["vectorized"][str(s.members)]
  out["speedup"] = {
      "total": v8["samples_per_s"] / seq["samples_per_s"],
      "steady": _rate(v8["steady_samples_per_s"],
                      seq["steady_samples_per_s"]),
      "target": TARGET}
  out["speedup"]["met"] = bool(out["speedup"]["steady"] >= TARGET)
  return out


def format_table(s: Settings, out: dict) -> str:
  seq = out["sequential"]
  lines = [f"{'':24s} {'runs':>5s} {'samples/s':>11s} {'steady':>11s} "
           f"{'x seq':>6s} {'memory MiB':>10s} {'first call s':>12s}",
           f"{'one after another':24s} {seq['runs']:5d} "
           f"{seq['samples_per_s']:11,.0f} {seq['steady_samples_per_s']:11,.0f}"
           f" {1.0:6.2f} {'-':>10s} {'-':>12s}"]
  for n, vec in out["vectorized"].items():
    mem = vec["memory"].get("total_bytes")
    lines.append(
        f"{'vectorized':24s} {int(n):5d} {vec['samples_per_s']:11,.0f} "
        f"{vec['steady_samples_per_s']:11,.0f} "
        f"{_rate(vec['steady_samples_per_s'], seq['steady_samples_per_s']):6.2f} "
        f"{(mem or 0) / 2**20:10.1f} {vec['first_call_s']:12.2f}")
  sp = out["speedup"]
  lines.append(f"speedup at {s.members} members: {sp['steady']:.2f}x steady, "
               f"{sp['total']:.2f}x with compiles (target >= {TARGET}x: "
               f"{'met' if sp['met'] else 'MISSED'})")
  return "\n".join(lines)


def format_markdown(s: Settings, out: dict) -> str:
  """RESULTS.md's table of the run (``benchmarks.report`` reprints it)."""
  seq = out["sequential"]
  lines = ["| | runs | samples/s | steady samples/s | x one after another "
           "(steady) | memory MiB | first call s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
           f"| one after another | {seq['runs']} | "
           f"{seq['samples_per_s']:,.0f} | {seq['steady_samples_per_s']:,.0f}"
           " | 1.00 | - | - |"]
  for n, vec in out["vectorized"].items():
    mem = vec["memory"].get("total_bytes") or 0
    lines.append(
        f"| vectorized | {n} | {vec['samples_per_s']:,.0f} | "
        f"{vec['steady_samples_per_s']:,.0f} | "
        f"{_rate(vec['steady_samples_per_s'], seq['steady_samples_per_s']):.2f}"
        f" | {mem / 2**20:.1f} | {vec['first_call_s']:.2f} |")
  sp = out["speedup"]
  lines += ["", f"- train speedup at {s.members} members: {sp['steady']:.2f}x "
            f"steady, {sp['total']:.2f}x with compiles (target >= "
            f"{TARGET}x: {'met' if sp['met'] else 'missed'})"]
  return "\n".join(lines)


def run_benchmark(config, settings: Settings) -> dict:
  """``benchmarks.run``'s entry for --workload=sweep (--peers and --reps
  do not apply: one measurement of each side)."""
  from benchmarks import harness
  load_before = harness.load_average()
  t0 = time.perf_counter()
  print(f"Workload sweep: {settings}")
  out = measure(settings)
  table = format_table(settings, out)
  print()
  print(table)
  load_after = harness.load_average()
  print(f"Load average before {load_before}, after {load_after}; "
        f"{time.perf_counter() - t0:.0f} s")
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "machine": {**harness.machine_info(), "load_before": load_before,
                  "load_after": load_after},
      "workloads": {NAME: {"settings": dataclasses.asdict(settings),
                           "results": out, "table": table,
                           "markdown": format_markdown(settings, out)}},
      "notes": ["peers and reps do not apply to the sweep workload"],
      "seconds": time.perf_counter() - t0,
  }
  if config.json:
    runner.write_json_atomic(config.json, result)
    print(f"Wrote {config.json}")
  return result
