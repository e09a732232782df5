"""What the reliability guards cost in ``fit``, on the reverse task's default
model (51 features, 128 LSTM units, batch 32, 25 steps per call):

* ``nonfinite``: "ignore" (the library default), "stop" (the binaries'
  default: finiteness checks and a select per step; the host reads each
  call's flags one call late, so it does not wait on the device), "skip";
* metrics rows appended with fsync after every call (the worst case; the
  binaries log every 500 steps by default).

  python -m benchmarks.reliability_overhead [--steps=1500 --repeats=6
      --out=benchmarks/runs/reliability_overhead.json]

Prints a table of steady-state samples/s (compile excluded; the median over
the rounds after the first, which compiles) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from seqjax import train as train_lib


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--repeats", type=int, default=6)
  parser.add_argument("--out",
                      default="benchmarks/runs/reliability_overhead.json")
  args = parser.parse_args()

  bsz, k = 32, 25
  model, params, data, loss_fn, tx = harness.reverse_default_setup(
      args.steps, bsz)
  tmp = tempfile.mkdtemp(prefix="seqjax-bench-")
  variants = [("ignore", False), ("stop", False), ("skip", False),
              ("stop", True)]
  multis = {mode: train_lib.make_multi_step(loss_fn, mode)
            for mode in ("ignore", "stop", "skip")}
  rates = {v: [] for v in variants}
  # Rounds of every variant in turn, so a change of machine load hits all.
  for r in range(args.repeats):
    for mode, log_rows in variants:
      cfg = train_lib.FitConfig(batch_size=bsz, epochs=1, steps_per_call=k,
                                log_every_steps=k if log_rows else 0,
                                nonfinite=mode)
      state = train_lib.create_train_state(  # fit donates: a fresh copy
          model, jax.tree.map(lambda x: jnp.asarray(np.array(x)), params), tx)
      log = train_lib.MetricsLog(os.path.join(tmp, f"{mode}-{r}.jsonl")
                                 if log_rows else None)
      _, stats = train_lib.fit(state, data, loss_fn, cfg,
                               multi_step=multis[mode], metrics_log=log)
      assert stats.compiles == 1, stats.compiles
      if r > 0:  # round 0 compiles
        rates[(mode, log_rows)].append(stats.samples_per_second(bsz))
  rows = [{"nonfinite": mode, "fsynced_row_every_call": log_rows,
           "samples_per_s_median": float(np.median(rates[(mode, log_rows)])),
           "samples_per_s_all": rates[(mode, log_rows)]}
          for mode, log_rows in variants]
  base = rows[0]["samples_per_s_median"]
  print(f"{'nonfinite':<10} {'rows+fsync':<11} {'samples/s':>10} {'vs ignore':>9}")
  for row in rows:
    row["relative"] = row["samples_per_s_median"] / base
    print(f"{row['nonfinite']:<10} {str(row['fsynced_row_every_call']):<11} "
          f"{row['samples_per_s_median']:>10,.0f} {row['relative']:>9.3f}")
  harness.write_overhead_json(args.out, {
      "steps": args.steps, "batch_size": bsz, "steps_per_call": k,
      "repeats": args.repeats}, rows)


if __name__ == "__main__":
  main()
