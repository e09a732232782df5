"""Where seqjax's greedy and beam search spend their time: XLA's own time
per operation inside each decoder's compiled loop, from a profiler trace of
the library's decoders (``benchmarks.decode``'s seqjax runner) on the real
test sentences of a trained translate workdir.

  taskset -c 1 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      python -m benchmarks.beam_profile --model_dir=WORKDIR [--json=PATH]

Prints every operation's milliseconds per decoder step, named by the HLO
instruction and the JAX operations it came from, and, with ``--json``,
writes them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types

from seqjax.config import field


@dataclasses.dataclass
class ProfileConfig:
  model_dir: str = field("", "A trained translate workdir (required).")
  trace_batches: int = field(4, "Batches decoded while tracing.", low=1)
  batch: int = field(50, "Sentences per batch.", low=1)
  beam_size: int = field(5, "Beams.", low=1)
  json: str = field("", "Write the table here as JSON.")

  def validate(self):
    return [] if self.model_dir else [
        "--model_dir is required: the trace decodes its test sentences"]


def trace(config: ProfileConfig) -> list[dict]:
  """Each decoder's loop traced (``jax.profiler``; XLA:CPU's per-operation
  events): every operation's milliseconds per decoder step, named by the
  HLO instruction and the JAX operation it came from."""
  import gzip
  import glob
  import os
  import tempfile
  import jax
  from benchmarks import decode
  w = decode.Workload(decode.Settings(
      model_dir=config.model_dir, batches=str(config.batch),
      beam_size=config.beam_size))
  runner = decode.SeqjaxRunner(w)
  b, rows = config.batch, []
  for decoder, fn in runner.fns.items():
    fn = jax.jit(fn)  # one executable, whose operations the trace names
    args = (runner.params, w.src_NS[:b], w.mask_NS[:b])
    described = _hlo_descriptions(fn.lower(*args).compile().as_text())
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as tmp:
      steps = 0
      with jax.profiler.trace(tmp, create_perfetto_trace=True):
        for i in range(config.trace_batches):
          _, st = jax.block_until_ready(fn(
              runner.params, w.src_NS[i * b:(i + 1) * b],
              w.mask_NS[i * b:(i + 1) * b]))
          steps += int(st)
      path = glob.glob(os.path.join(tmp, "plugins", "profile", "*",
                                    "perfetto_trace.json.gz"))[0]
      with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    events = [e for e in events if e.get("ph") == "X"]
    loops = {}
    for e in events:
      if e["name"].startswith("while"):
        loops[e["name"]] = loops.get(e["name"], 0.0) + e["dur"]
    loop = max(loops, key=loops.get)  # the decoding loop: the longest
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in events
             if e["name"] == loop]
    inside, outside = {}, {}
    for e in events:
      if e["name"].startswith(("while", "Thunk", "$", "Pjit")):
        continue
      where = inside if any(a <= e["ts"] and e["ts"] + e["dur"] <= z
                            for a, z in spans) else outside
      where[e["name"]] = where.get(e["name"], 0.0) + e["dur"] / 1e3
    loop_ms = loops[loop] / 1e3
    rows.append({"decoder": decoder, "where": "loop", "op": loop,
                 "what": f"the decoding loop: {steps} steps",
                 "ms_per_step": loop_ms / steps, "share": 1.0})
    for t, n in sorted(((t, n) for n, t in inside.items()), reverse=True
                       )[:12]:
      rows.append({"decoder": decoder, "where": "loop", "op": n,
                   "what": described.get(n, ""), "ms_per_step": t / steps,
                   "share": t / loop_ms})
    batches = config.trace_batches
    rows.append({"decoder": decoder, "where": "outside the loop",
                 "op": "(all)", "what": "encoder and set-up, per batch",
                 "ms_per_batch": sum(outside.values()) / batches})
    for t, n in sorted(((t, n) for n, t in outside.items()), reverse=True
                       )[:4]:
      rows.append({"decoder": decoder, "where": "outside the loop", "op": n,
                   "what": described.get(n, ""),
                   "ms_per_batch": t / batches})
  return rows


def _hlo_descriptions(text: str) -> dict[str, str]:
  """HLO instruction name -> its shape and the JAX operations it computes
  (a fusion: those of its fused computation), from compiled HLO text."""
  comps, current = {}, None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
    if header:
      current = comps.setdefault(header.group(1), [])
    elif current is not None:
      current.append(line)
  out = {}
  for lines in comps.values():
    for line in lines:
      m = re.match(r"\s*(?:ROOT )?%(\S+) = (.+?) [a-z-]+\(", line)
      if not m:
        continue
      called = re.search(r"calls=%([\w.\-]+)", line)
      ops = []
      for source in comps.get(called.group(1), []) if called else [line]:
        op = re.search(r'op_name="([^"]+)"', source)
        short = "/".join(op.group(1).split("/")[-2:]) if op else None
        if short and short not in ops:
          ops.append(short)
      shape = re.sub(r"\{[^}]*\}", "", m.group(2))
      out[m.group(1)] = f"{shape}: {', '.join(ops[:4])}"
  return out


def run(config: ProfileConfig) -> list[dict]:
  import os
  # XLA:CPU names its operations in a trace only with this flag (read when
  # the backend starts, which is later).
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_xprof_traceme=true").strip()
  rows = trace(config)
  for r in rows:
    cost = (f"{r['ms_per_step']:7.3f} ms/step {r['share'] * 100:5.1f}%"
            if "ms_per_step" in r else f"{r['ms_per_batch']:7.2f} ms/batch")
    print(f"{r['decoder']:7s} {r['op']:24s} {cost:22s} {r['what'][:100]}")
  _write(config, rows)
  return rows


def _write(config: ProfileConfig, rows: list[dict]) -> None:
  if config.json:
    with open(config.json, "w", encoding="utf-8") as f:
      json.dump({"config": dataclasses.asdict(config), "rows": rows}, f,
                indent=2)


if __name__ == "__main__":
  from experiments import common
  common.main(types.SimpleNamespace(name="benchmarks.beam_profile",
                                    config_cls=ProfileConfig, run=run))
