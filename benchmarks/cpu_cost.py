"""CPU time of seqjax's reverse workload on one core: steadier than wall time
on a shared machine, so library changes are compared with this.

  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 1 \\
      python -m benchmarks.cpu_cost [--json=PATH]

Reports the CPU milliseconds of a training step (``make_multi_step``, 25
steps per call, batch 32; minimum and 20th percentile over single calls),
the CPU seconds of compiling that call, and batched greedy decoding (batch
1000) in sequences per CPU second (best of 7). Run it on one core (above): the
CPU time of a multi-threaded run counts threads waiting for each other.
"""

from __future__ import annotations

import dataclasses
import json
import time
import types

import jax
import numpy as np

from benchmarks import harness
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.config import field
from seqjax.models import ModelSettings, Seq2Seq


@dataclasses.dataclass
class CpuCostConfig:
  calls: int = field(60, "Timed single calls of 25 training steps.")
  json: str = field("", "Write the numbers as JSON here.")

  def validate(self):
    return [] if self.calls > 0 else [f"--calls must be positive; got "
                                      f"{self.calls}"]


def run(config: CpuCostConfig) -> dict:
  k = 25
  data = reverse_data.generate(np.random.default_rng(0), 20_000)
  test = reverse_data.generate(np.random.default_rng(1), 10_000)
  model = Seq2Seq(src_vocab=51, tgt_vocab=51,
                  settings=ModelSettings(units=128))
  params = jax.jit(model.init)(jax.random.key(0), data["src"][:1],
                               data["dec_in"][:1])
  loss_fn = train_lib.make_seq2seq_loss(model)
  device_data = jax.device_put(data)
  idx = np.random.default_rng(0).integers(
      0, len(data["src"]), size=(config.calls + 1, k, 32)).astype(np.int32)
  valid = np.ones(k, bool)
  multi_step = train_lib.make_multi_step(loss_fn)
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam"))
  c = time.process_time()
  no, halted = np.zeros(k, bool), np.zeros((), bool)
  multi_step.lower(state, (), device_data, idx[0], valid, no,
                   halted).compile()
  compile_cpu = time.process_time() - c
  state, _, _, metrics = multi_step(state, (), device_data, idx[0], valid, no,
                                    halted)
  jax.block_until_ready(metrics)
  steps = []
  for i in range(config.calls):
    c = time.process_time()
    state, _, _, metrics = multi_step(state, (), device_data, idx[1 + i],
                                      valid, no, halted)
    jax.block_until_ready(metrics)
    steps.append((time.process_time() - c) / k)
  _, in_batches = harness.library_decoder(model, "greedy", max_len=3,
                                         start_id=0)
  decode = lambda: in_batches(state.params, test["src"], 1000)
  decode()
  decodes = []
  for _ in range(7):
    c = time.process_time()
    decode()
    decodes.append(time.process_time() - c)
  out = {"train_cpu_ms_per_step_min": min(steps) * 1e3,
         "train_cpu_ms_per_step_p20": float(np.percentile(steps, 20)) * 1e3,
         "compile_cpu_s": compile_cpu,
         "decode_seq_per_cpu_s": len(test["src"]) / min(decodes),
         "final_loss": float(np.asarray(metrics["loss"]).mean())}
  for key, value in out.items():
    print(f"{key:28s} {value:12.4f}")
  if config.json:
    with open(config.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  from experiments import common
  # common.main takes a task-like object: its name, config class and run.
  common.main(types.SimpleNamespace(name="benchmarks.cpu_cost",
                                    config_cls=CpuCostConfig, run=run))
