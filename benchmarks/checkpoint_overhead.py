"""What the default checkpoint policy (a save every 60 s of wall clock) costs
``fit`` on the reverse task's default model (51 features, 128 LSTM units,
batch 32, 25 steps per call, the binaries' non-finite guard):

* ``off``: no time-based saves (checkpoint_every_secs=0);
* ``clock only``: an interval never reached (1e9 s): the clock is read after
  every call, nothing saved -- the price of the check itself, which must not
  wait on the device;
* ``every N s``: a save every ``--every_secs`` (short, so that a run of a
  few seconds has several), each save timed;
* the cost at 60 s, derived: the time one save stops training (measured
  above, median) divided by 60 s.

  python -m benchmarks.checkpoint_overhead [--steps=6000 --repeats=4
      --every_secs=2 --out=benchmarks/runs/checkpoint_overhead.json]

Prints a table of steady-state samples/s (compile excluded; the median over
the rounds after the first, which compiles) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer


class _TimedCheckpointer(Checkpointer):
  """Records how long each save holds the training loop."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.seconds = []

  def save(self, state, force=False, carry=None):
    t = time.perf_counter()
    saved = super().save(state, force=force, carry=carry)
    if saved:
      self.seconds.append(time.perf_counter() - t)
    return saved


def _table(rows, base):
  print(f"{'checkpoints':<14} {'samples/s':>10} {'vs off':>7} {'saves':>6} "
        f"{'save ms':>8}")
  for row in rows:
    row["relative"] = row["samples_per_s_median"] / base
    print(f"{row['variant']:<14} {row['samples_per_s_median']:>10,.0f} "
          f"{row['relative']:>7.3f} {row['saves_per_run']:>6.1f} "
          f"{row['save_ms_median']:>8.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=6000)
  parser.add_argument("--repeats", type=int, default=4)
  parser.add_argument("--every_secs", type=float, default=2.0)
  parser.add_argument("--out",
                      default="benchmarks/runs/checkpoint_overhead.json")
  args = parser.parse_args()

  bsz, k = 32, 25
  model, params, data, loss_fn, tx = harness.reverse_default_setup(
      args.steps, bsz)
  multi = train_lib.make_multi_step(loss_fn, "stop")
  tmp = tempfile.mkdtemp(prefix="seqjax-bench-")
  variants = {"off": 0.0, "clock only": 1e9,
              f"every {args.every_secs:g} s": args.every_secs}
  rates = {v: [] for v in variants}
  saves = {v: [] for v in variants}
  # Rounds of every variant in turn, so a change of machine load hits all.
  for r in range(args.repeats):
    for name, secs in variants.items():
      cfg = train_lib.FitConfig(batch_size=bsz, epochs=1, steps_per_call=k,
                                log_every_steps=0, nonfinite="stop",
                                checkpoint_every_secs=secs)
      state = train_lib.create_train_state(  # fit donates: a fresh copy
          model, jax.tree.map(lambda x: jnp.asarray(np.array(x)), params), tx)
      ckpt = _TimedCheckpointer(os.path.join(tmp, f"{r}-{secs}"), {})
      # The save at the end of the epoch falls after the timed steps.
      _, stats = train_lib.fit(state, data, loss_fn, cfg, multi_step=multi,
                               checkpointer=ckpt)
      ckpt.close()
      if r > 0:  # round 0 compiles
        rates[name].append(stats.samples_per_second(bsz))
        saves[name].append(ckpt.seconds[:-1])  # the epoch end's left out
  rows = [{"variant": name, "checkpoint_every_secs": secs,
           "samples_per_s_median": float(np.median(rates[name])),
           "samples_per_s_all": rates[name],
           "saves_per_run": float(np.mean([len(s) for s in saves[name]])),
           "save_ms_median": float(np.median(sum(saves[name], []) or [0.0])
                                   * 1e3)}
          for name, secs in variants.items()]
  _table(rows, rows[0]["samples_per_s_median"])
  save_s = rows[-1]["save_ms_median"] / 1e3
  derived = save_s / (60.0 + save_s)
  print(f"At the default 60 s: one save ({save_s * 1e3:.0f} ms) a minute "
        f"costs {derived * 100:.2f}% of training time.")
  harness.write_overhead_json(args.out, {
      "steps": args.steps, "batch_size": bsz, "steps_per_call": k,
      "repeats": args.repeats, "every_secs": args.every_secs,
      "derived_cost_at_60_s": derived}, rows)


if __name__ == "__main__":
  main()
