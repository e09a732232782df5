"""Run by tests/test_sharding.py in a subprocess with 8 simulated CPU devices
(XLA_FLAGS is read when the backend starts, so it cannot be set in the test
process). Prints one JSON line of measurements for the test to check.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m tests.multidevice_worker <scratch_dir>
"""

import json
import sys

import jax
import numpy as np

from experiments import reverse
from seqjax import sharding
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.models import ModelSettings, Seq2Seq

STEPS = 12


class _Rows:
  def __init__(self):
    self.rows = []

  def write(self, row):
    self.rows.append(row)


def _fit(mesh):
  data = reverse_data.generate(np.random.default_rng(0), 6 * 32, 4, 2, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=16))
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam", 0.01))
  log = _Rows()
  # 6 steps an epoch, 4 per call: calls of 4, 2, 4, 2 steps (padding skipped).
  config = train_lib.FitConfig(batch_size=32, epochs=STEPS // 6,
                               steps_per_call=4, log_every_steps=1)
  loss_fn = train_lib.make_seq2seq_loss(model)
  multi_step = train_lib.make_multi_step(loss_fn, mesh=mesh)
  state, stats = train_lib.fit(state, data, loss_fn, config, mesh=mesh,
                               metrics_log=log, multi_step=multi_step)
  hlo = ""
  if mesh is not None:
    idx = np.zeros((4, 32), np.int32)
    hlo = multi_step.lower(state, (), sharding.replicate(data, mesh), idx,
                           np.ones(4, bool), np.zeros(4, bool),
                           np.zeros((), bool)).compile().as_text()
  return state, [r["loss"] for r in log.rows], stats, hlo


def main(scratch):
  out = {"device_count": jax.device_count()}
  one, losses_1, _, _ = _fit(None)
  eight, losses_8, stats_8, hlo = _fit(sharding.make_mesh(8))
  out["steps"] = [int(one.step), int(eight.step)]
  out["compiles_8"] = stats_8.compiles
  out["loss_diff"] = float(np.max(np.abs(np.array(losses_1) -
                                         np.array(losses_8))))
  out["n_losses"] = [len(losses_1), len(losses_8)]
  out["param_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(jax.device_get(one.params)),
      jax.tree.leaves(jax.device_get(eight.params))))
  out["param_devices_8"] = min(len(x.sharding.device_set)
                               for x in jax.tree.leaves(eight.params))
  out["replicated_8"] = all(x.is_fully_replicated
                            for x in jax.tree.leaves(eight.params))
  out["all_reduce_in_hlo"] = "all-reduce(" in hlo
  # Each device gathers its own 32 / 8 rows: no batch is ever all-gathered.
  out["all_gather_in_hlo"] = "all-gather(" in hlo
  out["local_row_gather"] = "s32[4,1,4]{2,1,0} gather(" in hlo

  # Flag checks that need more than one device present.
  out["errors_indivisible"] = reverse.ReverseConfig(
      batch_size=12, num_devices=8).device_errors()
  out["errors_default_devices"] = reverse.ReverseConfig(
      batch_size=12).device_errors()
  out["errors_ok"] = reverse.ReverseConfig(batch_size=16,
                                           num_devices=8).device_errors()

  # The whole binary path on 8 devices, then resumed on one device from the
  # 8-device checkpoint.
  tiny = dict(n_features=9, n_steps_in=4, n_steps_out=2, n_units=16,
              n_samples=320, batch_size=32, n_eval=64, n_examples=0,
              learning_rate=0.01, workdir=f"{scratch}/rev")
  r8 = reverse.run(reverse.ReverseConfig(num_devices=8, **tiny))
  r1 = reverse.run(reverse.ReverseConfig(num_devices=1, epochs=2, **tiny))
  out["run_8"] = {k: r8[k] for k in ("step", "train_loss", "train_compiles")}
  out["run_resumed_1"] = {k: r1[k] for k in ("step", "train_loss",
                                             "train_compiles")}
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
