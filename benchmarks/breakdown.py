"""Where a reverse training step's time goes: a timing breakdown.

  python -m benchmarks.breakdown [--reps=5] [--json=PATH]

Each row is K steps scanned inside one jitted call (as ``train.fit`` runs
them), so per-call dispatch is amortised the same way; the rows add one piece
at a time: gathering the batch, the forward loss, its gradient, the optimizer
update, and ``make_multi_step``'s ``lax.cond``. Two rows swap the gate
nonlinearities for a multiply (wrong numbers, for cost only) to show what the
transcendentals cost, and one runs the gradient through plain autodiff of the
scan instead of the layers' hand-written backward pass. Also: per-call
dispatch of a trivial jitted function and compile times. Wall time is the
best over repetitions and CPU time (all threads) the median; on a shared
machine compare rows with each other, not with other runs.
"""

from __future__ import annotations

import dataclasses
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax import recurrent as rec
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.config import field
from seqjax.models import Seq2Seq


@dataclasses.dataclass
class BreakdownConfig:
  reps: int = field(5, "Repetitions of each row (best wall time reported).")
  steps_per_call: int = field(25, "Steps scanned per jitted call (K).")
  calls: int = field(8, "Jitted calls per repetition.")
  json: str = field("", "Write the rows as JSON here.")

  def validate(self):
    return [f"--{n} must be positive; got {getattr(self, n)}"
            for n in ("reps", "steps_per_call", "calls") if getattr(self, n) < 1]



def _autodiff_lstm_sequence(recurrent, carry, xw_TBG, mask_TB=None):
  """``rec.lstm_sequence`` as a plain scan of ``lstm_update``, which autodiff
  differentiates: the row the hand-written backward pass is measured against.
  (Unmasked: this benchmark's batches have no padding.)"""
  assert mask_TB is None
  if carry is None:
    zeros_BH = jnp.zeros(xw_TBG.shape[1:2] + recurrent["recurrent_kernel"]
                         .shape[:1], xw_TBG.dtype)
    carry = (zeros_BH, zeros_BH)

  def body(carry, xw_BG):
    carry = rec.lstm_update(recurrent, carry, xw_BG)
    return carry, carry[0]
  carry, h_TBH = jax.lax.scan(body, carry, xw_TBG)
  return h_TBH, carry

def _cheap_cell(kernel_HG, h_BH, c_BH, xw_BG):
  # Cost probe only: the LSTM cell with every sigmoid / tanh a multiply.
  z_BG = xw_BG if h_BH is None else xw_BG + h_BH @ kernel_HG
  i, f, g, o = jnp.split(z_BG * 0.25, 4, axis=-1)
  c_new = i * g if c_BH is None else f * c_BH + i * g
  tc = c_new * 0.5
  return o * tc, c_new, jnp.concatenate([i, f, g, o, tc], axis=-1)


def run(config: BreakdownConfig) -> dict:
  k = config.steps_per_call
  data = reverse_data.generate(np.random.default_rng(0), 20_000)
  model = Seq2Seq(src_vocab=51, tgt_vocab=51, units=128)
  params0 = jax.jit(model.init)(jax.random.key(0), data["src"][:1],
                                data["dec_in"][:1])
  loss_fn = train_lib.make_seq2seq_loss(model)
  tx = train_lib.make_optimizer("adam")
  device_data = jax.device_put(data)
  rng = np.random.default_rng(1)
  idx = rng.integers(0, 20_000, size=(config.calls + 1, k, 32)).astype(np.int32)
  valid = np.ones(k, bool)

  def fresh_state():
    return train_lib.create_train_state(
        model, jax.tree.map(jnp.copy, params0), tx)

  def scan_of(step):
    """K steps of ``step(state, batch) -> state`` in one jitted call."""
    def call(state, data, idx_KB):
      def body(state, idx_B):
        batch = jax.tree.map(lambda a: a[idx_B], data)
        return step(state, batch), None
      return jax.lax.scan(body, state, idx_KB)[0]
    return jax.jit(call, donate_argnums=0)

  def gather_only(state, batch):
    return state.replace(step=state.step + batch["src"][0, 0])

  def forward_only(state, batch):
    loss, _ = loss_fn(state.params, batch)
    return state.replace(step=state.step + (loss > 0).astype(jnp.int32))

  def grad_only(state, batch):
    grads = jax.grad(lambda p: loss_fn(p, batch)[0])(state.params)
    # SGD so the gradient is used; no optimizer state is touched.
    return state.replace(params=jax.tree.map(lambda p, g: p - 1e-3 * g,
                                             state.params, grads))

  train_step = train_lib.make_train_step(loss_fn)

  def full_step(state, batch):
    return train_step(state, batch)[0]

  def adam_only(state, batch):
    del batch
    grads = jax.tree.map(lambda p: p * 1e-3, state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)

  rows = []

  def measure(name, fn, call_args, patch=None):
    saved = (rec._lstm_cell, rec.LSTM.sequence)
    if patch == "cheap":
      rec._lstm_cell = _cheap_cell
    elif patch == "autodiff":
      rec.LSTM.sequence = staticmethod(_autodiff_lstm_sequence)
    try:
      state = fresh_state()
      t = time.perf_counter()
      state = call_args(fn, state, 0)
      jax.block_until_ready(state)
      first = time.perf_counter() - t
      walls, cpus = [], []
      for _ in range(config.reps):
        c, t = time.process_time(), time.perf_counter()
        for i in range(config.calls):
          state = call_args(fn, state, 1 + i)
        jax.block_until_ready(state)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    finally:
      rec._lstm_cell, rec.LSTM.sequence = saved
    n = config.calls * k
    row = {"row": name, "us_per_step": min(walls) / n * 1e6,
           "cpu_us_per_step": float(np.median(cpus)) / n * 1e6,
           "first_call_s": first}
    rows.append(row)
    print(f"{name:44s} {row['us_per_step']:8.1f} us/step  "
          f"cpu {row['cpu_us_per_step']:8.1f} us/step  "
          f"first call {first:5.2f} s", flush=True)

  plain = lambda fn, state, i: fn(state, device_data, idx[i])
  no = np.zeros(k, bool)
  multi = lambda fn, state, i: fn(state, (), device_data, idx[i], valid, no,
                                  np.zeros((), bool))[0]
  print(f"{'row (K=%d steps per call, batch 32)' % k:44s} {'wall':>8s}")
  measure("gather the batch only", scan_of(gather_only), plain)
  measure("+ forward loss", scan_of(forward_only), plain)
  measure("+ forward, cheap gate nonlinearities", scan_of(forward_only),
          plain, patch="cheap")
  measure("+ gradient (hand-written LSTM backward)", scan_of(grad_only), plain)
  measure("+ gradient, cheap gate nonlinearities", scan_of(grad_only), plain,
          patch="cheap")
  measure("+ gradient (autodiff of the scan)", scan_of(grad_only), plain,
          patch="autodiff")
  measure("Adam update alone", scan_of(adam_only), plain)
  measure("full train step (gradient + Adam)", scan_of(full_step), plain)
  measure("make_multi_step (+ lax.cond per step)",
          train_lib.make_multi_step(loss_fn), multi)

  # Dispatch: what one jitted call costs with nothing to do.
  tiny = jax.jit(lambda x: x + 1)
  x = jnp.zeros(())
  tiny(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(2000):
    x = tiny(x)
  x.block_until_ready()
  dispatch_us = (time.perf_counter() - t) / 2000 * 1e6
  single = jax.jit(train_step, donate_argnums=0)
  batch = {k_: v[:32] for k_, v in data.items()}
  state = fresh_state()
  t = time.perf_counter()
  state, _ = single(state, batch)
  jax.block_until_ready(state)
  single_first = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(200):
    state, _ = single(state, batch)
  jax.block_until_ready(state)
  single_us = (time.perf_counter() - t) / 200 * 1e6
  print(f"one jitted call doing x + 1: {dispatch_us:.1f} us; one train step "
        f"per jitted call: {single_us:.1f} us/step (first call, compile "
        f"included, {single_first:.2f} s)")
  out = {"rows": rows, "dispatch_us": dispatch_us,
         "single_step_per_call_us": single_us,
         "single_step_first_call_s": single_first,
         "steps_per_call": k}
  if config.json:
    from seqjax import runner
    runner.write_json_atomic(config.json, out)
    print(f"Wrote {config.json}")
  return out


if __name__ == "__main__":
  from experiments import common
  # common.main takes a task-like object: its name, config class and run.
  common.main(types.SimpleNamespace(name="benchmarks.breakdown",
                                    config_cls=BreakdownConfig, run=run))
