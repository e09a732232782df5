"""Why a vectorized group of reverse runs is not faster on a CPU core.

  taskset -c 0 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      python -m benchmarks.sweep_ceiling [--json=PATH]

Three measurements with the sweep workload's model (LSTM 128, 51 features,
6 -> 3, Adam), one jitted call of 25 train steps each, best of 6:

* ``batch``: one run's train step at batch 32, 64, ..., 256: the samples/s
  one model reaches when its batch grows. A group of n members does the
  work of one model at batch 32 n with n weight sets instead of one, so
  this is the ceiling of what stacking can win.
* ``group``: one run's step at batch 32 against ``vectorized``'s group call
  (8 members), per member.
* ``lstm_grad``: the gradient of ``recurrent.lstm_sequence`` (6 steps,
  batch 32) alone, vmapped over 8 members, and written with the member axis
  explicit (``einsum('nbh,nhg->nbg')`` in the scan, the kernel gradient one
  batched contraction): what a member-aware LSTM would give.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import recurrent
from seqjax import train as train_lib
from seqjax import vectorized
from seqjax.data import reverse as reverse_data
from seqjax.models import Seq2Seq

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
  model = Seq2Seq(src_vocab=FEATURES, tgt_vocab=FEATURES, units=UNITS)
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


def _explicit_group_lstm_grad(kernel_NHG, xw_NTBG, dh_NTBH):
  """d/d(kernel, xw) of sum(h * dh) + sum(h_T) + sum(c_T), member axis
  explicit (the computation of recurrent._lstm_sequence_fwd / _bwd)."""
  xw_TNBG, dh_TNBH = (jnp.swapaxes(a, 0, 1) for a in (xw_NTBG, dh_NTBH))
  zeros_NBH = jnp.zeros(xw_TNBG.shape[1:3] + kernel_NHG.shape[1:2])

  def forward(carry, xw_NBG):
    h, c = carry
    z = xw_NBG + jnp.einsum("nbh,nhg->nbg", h, kernel_NHG)
    i, f, g, o = recurrent._lstm_gates(z)  # pylint: disable=protected-access
    c = f * c + i * g
    tc = jnp.tanh(c)
    return (o * tc, c), (o * tc, jnp.concatenate([i, f, g, o, tc], -1), c)
  _, (h_TNBH, acts, c_TNBH) = jax.lax.scan(forward, (zeros_NBH, zeros_NBH),
                                           xw_TNBG)
  c_prev = jnp.concatenate([zeros_NBH[None], c_TNBH[:-1]])

  def backward(carry, inputs):
    dh, dc = carry
    dh_out, a, cp = inputs
    i, f, g, o, tc = jnp.split(a, 5, -1)
    dh = dh + dh_out
    dc = dc + dh * o * (1 - tc * tc)
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f),
                          dc * i * (1 - g * g), dh * tc * o * (1 - o)], -1)
    return (jnp.einsum("nbg,nhg->nbh", dz, kernel_NHG), dc * f), dz
  ones = jnp.ones_like(zeros_NBH)
  _, dz_TNBG = jax.lax.scan(backward, (ones, ones), (dh_TNBH, acts, c_prev),
                            reverse=True)
  h_prev = jnp.concatenate([zeros_NBH[None], h_TNBH[:-1]])
  return (jnp.einsum("tnbh,tnbg->nhg", h_prev, dz_TNBG),
          jnp.swapaxes(dz_TNBG, 0, 1))


def lstm_grad_seconds(n: int = 8, reps_in_call: int = 20) -> dict:
  keys = jax.random.split(jax.random.key(0), 3)
  kernel = jax.random.normal(keys[0], (n, UNITS, 4 * UNITS)) * 0.05
  xw = jax.random.normal(keys[1], (n, 6, 32, 4 * UNITS))
  dh = jax.random.normal(keys[2], (n, 6, 32, UNITS))

  def loss(k, x, d):
    h, (h_last, c_last) = recurrent.lstm_sequence({"recurrent_kernel": k},
                                                  None, x)
    return jnp.sum(h * d) + jnp.sum(h_last) + jnp.sum(c_last)
  grad = jax.grad(loss, argnums=(0, 1))

  def repeated(fn):  # the calls chained, so none is hoisted or dropped
    def call(k, x, d):
      def body(_, acc):
        gk, gx = fn(k + acc[0] * 1e-9, x, d)
        return acc[0] + gk, acc[1] + gx
      return jax.lax.fori_loop(0, reps_in_call, body,
                               (jnp.zeros_like(k), jnp.zeros_like(x)))
    return jax.jit(call)

  def seconds(fn, *args):
    f = repeated(fn)
    return _best(lambda: jax.block_until_ready(f(*args))) / reps_in_call
  ref = jax.jit(jax.vmap(grad))(kernel, xw, dh)
  mine = jax.jit(_explicit_group_lstm_grad)(kernel, xw, dh)
  err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            for a, b in zip(mine, ref))
  return {"members": n, "lone_s": seconds(grad, kernel[0], xw[0], dh[0]),
          "vmap_s_per_member": seconds(jax.vmap(grad), kernel, xw, dh) / n,
          "explicit_s_per_member": seconds(_explicit_group_lstm_grad, kernel,
                                           xw, dh) / n,
          "explicit_vs_vmap_max_rel_error": err}


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
  lstm = lstm_grad_seconds(members)
  print(f"lstm_sequence gradient: lone {lstm['lone_s'] * 1e6:.0f} us, vmapped "
        f"{lstm['vmap_s_per_member'] * 1e6:.0f} us a member, explicit member "
        f"axis {lstm['explicit_s_per_member'] * 1e6:.0f} us a member",
        flush=True)
  return {"batch": batch,
          "group": {"members": members, "step_s": group,
                    "lone_step_s": lone, "speedup": lone * members / group},
          "lstm_grad": lstm,
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
