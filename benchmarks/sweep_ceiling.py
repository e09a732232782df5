"""Why a vectorized group of reverse runs is not faster on a CPU core.

  taskset -c 0 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      python -m benchmarks.sweep_ceiling [--json=PATH]

Two measurements with the sweep workload's model (LSTM 128, 51 features,
6 -> 3, Adam), one jitted call of 25 train steps each, best of 6:

* ``batch``: one run's train step at batch 32, 64, ..., 256: the samples/s
  one model reaches when its batch grows. A group of n members does the
  work of one model at batch 32 n with n weight sets instead of one, so
  this is the ceiling of what stacking can win.
* ``group``: one run's step at batch 32 against ``vectorized``'s group call
  (8 members), per member.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import train as train_lib
from seqjax import vectorized
from seqjax.data import reverse as reverse_data
from seqjax.models import ModelSettings, Seq2Seq

K, N_EXAMPLES, UNITS, FEATURES = 25, 3200, 128, 51


def _best(f, reps: int = 6) -> float:
  f()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f()
    times.append(time.perf_counter() - t0)
  return min(times)


def _setup(n: int):
  model = Seq2Seq(src_vocab=FEATURES, tgt_vocab=FEATURES,
                  settings=ModelSettings(units=UNITS))
  data = [reverse_data.generate(np.random.default_rng([i, 0]), N_EXAMPLES, 6,
                                3, FEATURES) for i in range(n)]
  params = [jax.jit(model.init)(jax.random.key(i), data[0]["src"][:1],
                                data[0]["dec_in"][:1]) for i in range(n)]
  return model, data, params, train_lib.make_seq2seq_loss(model)


def lone_step_seconds(model, data, params, loss_fn, batch: int) -> float:
  call = train_lib.make_multi_step(loss_fn, "stop")
  box = [train_lib.create_train_state(
      model, jax.tree.map(np.array, params),
      train_lib.make_optimizer("adam", 1e-3))]
  idx_KB = jnp.asarray(np.random.default_rng(0).integers(
      0, N_EXAMPLES, (K, batch)), jnp.int32)
  args = ((), jax.device_put(data), idx_KB, jnp.ones(K, bool),
          jnp.zeros(K, bool), jnp.asarray(False))

  def run():
    box[0], _, _, metrics = call(box[0], *args)
    jax.block_until_ready(metrics)
  return _best(run) / K


def group_step_seconds(model, data, params, loss_fn) -> float:
  n = len(params)
  call = vectorized.make_multi_step(loss_fn, "stop")
  box = [vectorized.init_group(
      model, [jax.tree.map(np.array, p) for p in params],
      vectorized.make_optimizer("adam"), [{"learning_rate": 1e-3}] * n)]
  idx_NKB = jnp.asarray(np.random.default_rng(0).integers(
      0, N_EXAMPLES, (n, K, 32)), jnp.int32)
  args = (jax.device_put(vectorized.stack(data)), idx_NKB,
          jnp.ones((n, K), bool), jnp.zeros(n, bool))

  def run():
    box[0], _, metrics = call(box[0], *args)
    jax.block_until_ready(metrics)
  return _best(run) / K


def measure(members: int = 8) -> dict:
  model, data, params, loss_fn = _setup(members)
  batch = {}
  for b in (32, 64, 128, 256):
    s = lone_step_seconds(model, data[0], params[0], loss_fn, b)
    batch[str(b)] = {"step_s": s, "samples_per_s": b / s}
    print(f"one run, batch {b:3d}: {s * 1e3:6.3f} ms a step, "
          f"{b / s:8,.0f} samples/s", flush=True)
  lone = batch["32"]["step_s"]
  group = group_step_seconds(model, data, params, loss_fn)
  print(f"group of {members}: {group * 1e3:.3f} ms a step, "
        f"{group / members * 1e3:.3f} ms a member (lone {lone * 1e3:.3f}): "
        f"{lone * members / group:.2f}x", flush=True)
  return {"batch": batch,
          "group": {"members": members, "step_s": group,
                    "lone_step_s": lone, "speedup": lone * members / group},
          "ceiling": batch["256"]["samples_per_s"] /
                     batch["32"]["samples_per_s"]}


def main(argv):
  out = measure()
  out["XLA_FLAGS"] = __import__("os").environ.get("XLA_FLAGS", "")
  for arg in argv[1:]:
    if arg.startswith("--json="):
      with open(arg.split("=", 1)[1], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
  main(sys.argv)
