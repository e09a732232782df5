"""What the reliability guards cost in ``fit``, on the reverse task's default
model (51 features, 128 LSTM units, batch 32, 25 steps per call):

* ``nonfinite``: "ignore" (the library default), "stop" (the binaries'
  default: finiteness checks and a select per step, a host sync per call),
  "skip";
* metrics rows appended with fsync after every call (the worst case; the
  binaries log every 500 steps by default).

  python -m benchmarks.reliability_overhead [--steps=1500 --repeats=3
      --out=reliability_overhead.json]

Prints a table of steady-state samples/s (compile excluded; best of the
repeats) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import train as train_lib
from seqjax.data import reverse
from seqjax.models import Seq2Seq


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="reliability_overhead.json")
  args = parser.parse_args()

  bsz, k = 32, 25
  data = reverse.generate(np.random.default_rng(0), args.steps * bsz)
  model = Seq2Seq(src_vocab=51, tgt_vocab=51, units=128)
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  loss_fn = train_lib.make_seq2seq_loss(model)
  rows = []
  tmp = tempfile.mkdtemp(prefix="seqjax-bench-")
  for mode, log_rows in [("ignore", False), ("stop", False), ("skip", False),
                         ("stop", True)]:
    multi = train_lib.make_multi_step(loss_fn, mode)
    cfg = train_lib.FitConfig(batch_size=bsz, epochs=1, steps_per_call=k,
                              log_every_steps=k if log_rows else 0,
                              nonfinite=mode)
    rates = []
    for r in range(args.repeats):
      state = train_lib.create_train_state(  # fit donates: a fresh copy
          model, jax.tree.map(lambda x: jnp.asarray(np.array(x)), params),
          train_lib.make_optimizer("adam"))
      log = train_lib.MetricsLog(os.path.join(tmp, f"{mode}-{r}.jsonl")
                                 if log_rows else None)
      _, stats = train_lib.fit(state, data, loss_fn, cfg, multi_step=multi,
                               metrics_log=log)
      assert stats.compiles == 1, stats.compiles
      rates.append(stats.samples_per_second(bsz))
    rows.append({"nonfinite": mode, "fsynced_row_every_call": log_rows,
                 "samples_per_s_best": max(rates),
                 "samples_per_s_all": rates})
  base = rows[0]["samples_per_s_best"]
  print(f"{'nonfinite':<10} {'rows+fsync':<11} {'samples/s':>10} {'vs ignore':>9}")
  for row in rows:
    row["relative"] = row["samples_per_s_best"] / base
    print(f"{row['nonfinite']:<10} {str(row['fsynced_row_every_call']):<11} "
          f"{row['samples_per_s_best']:>10,.0f} {row['relative']:>9.3f}")
  result = {"steps": args.steps, "batch_size": bsz, "steps_per_call": k,
            "repeats": args.repeats, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
            "python": platform.python_version(), "jax": jax.__version__,
            "rows": rows}
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
