"""Data-parallel scaling: training samples/s against the number of devices.

  python -m benchmarks.scaling [--devices=1,2,4,8] [--batch_size=256]
      [--per_device_batch] [--out=runs/benchmarks/scaling.json]

Each device count runs in a fresh process: on a CPU the devices are simulated
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), so they share the
machine's cores and the numbers show the cost of the SPMD program (gather,
all-reduce), not a speed-up; on a GPU / TPU host the real devices are used.
The reverse task's model is trained through ``seqjax.train.fit`` with a
``data`` mesh of N devices; samples/s counts the steady calls (compile
excluded). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(args) -> dict:
  """One device count, in this process (the devices are already set)."""
  import jax
  import numpy as np
  from seqjax import sharding
  from seqjax import train as train_lib
  from seqjax.data import reverse
  from seqjax.models import ModelSettings, Seq2Seq

  n = args.num_devices
  batch = args.batch_size * (n if args.per_device_batch else 1)
  data = reverse.generate(np.random.default_rng(0), args.n_samples, 6, 3, 51)
  model = Seq2Seq(src_vocab=51, tgt_vocab=51,
                  settings=ModelSettings(units=args.n_units))
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  mesh = sharding.make_mesh(n)
  config = train_lib.FitConfig(batch_size=batch, epochs=args.epochs,
                               steps_per_call=args.steps_per_call,
                               log_every_steps=0)
  t0 = time.perf_counter()
  state, stats = train_lib.fit(state, data, train_lib.make_seq2seq_loss(model),
                               config, mesh=mesh)
  return {"devices": n, "global_batch": batch,
          "backend": jax.default_backend(),
          "samples_per_s": stats.samples_per_second(batch),
          "steps": stats.steps_run, "compiles": stats.compiles,
          "first_call_s": stats.first_call_seconds,
          "wall_s": time.perf_counter() - t0,
          "final_loss": stats.last_metrics.get("loss")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", default="1,2,4,8",
                      help="Comma-separated device counts.")
  parser.add_argument("--batch_size", type=int, default=256,
                      help="Global batch (per device with --per_device_batch).")
  parser.add_argument("--per_device_batch", action="store_true",
                      help="Weak scaling: the batch grows with the devices.")
  parser.add_argument("--n_units", type=int, default=128)
  parser.add_argument("--n_samples", type=int, default=51_200)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--steps_per_call", type=int, default=25)
  parser.add_argument("--out", default=os.path.join("runs", "benchmarks",
                                                    "scaling.json"))
  parser.add_argument("--num_devices", type=int, default=0,
                      help=argparse.SUPPRESS)  # the child's device count
  args = parser.parse_args()

  if args.num_devices:
    print(json.dumps(measure(args)))
    return

  counts = [int(c) for c in args.devices.split(",")]
  rows = []
  for n in counts:
    if args.batch_size % n and not args.per_device_batch:
      sys.exit(f"--batch_size={args.batch_size} does not divide by {n} "
               "devices")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep +
           os.environ.get("PYTHONPATH", "")}
    if env.get("JAX_PLATFORMS", "cpu") == "cpu":
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}")
    child = [sys.executable, "-m", "benchmarks.scaling", f"--num_devices={n}"]
    child += [f"--{k}={getattr(args, k)}" for k in
              ("batch_size", "n_units", "n_samples", "epochs",
               "steps_per_call")]
    child += ["--per_device_batch"] if args.per_device_batch else []
    out = subprocess.run(child, capture_output=True, text=True, env=env,
                         cwd=ROOT)
    if out.returncode != 0:
      sys.exit(f"{n} devices failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

  base = rows[0]["samples_per_s"]
  print(f"{'devices':>7} {'batch':>6} {'samples/s':>11} {'vs first':>8} "
        f"{'compile+1st call s':>18}")
  for r in rows:
    r["relative"] = r["samples_per_s"] / base
    print(f"{r['devices']:>7} {r['global_batch']:>6} {r['samples_per_s']:>11,.0f}"
          f" {r['relative']:>8.2f} {r['first_call_s']:>18.2f}")
  report = {"benchmark": "scaling", "backend": rows[0]["backend"],
            "simulated_devices": rows[0]["backend"] == "cpu",
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "config": {k: getattr(args, k) for k in
                       ("batch_size", "per_device_batch", "n_units",
                        "n_samples", "epochs", "steps_per_call")},
            "rows": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
