"""Data parallelism: the mesh path equals the one-device path, on 1 and 8
(simulated) devices and across two processes; --num_devices / multi-process
flags are checked; bfloat16 compute trains with float32 state."""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import reverse
from seqjax import decoding
from seqjax import runner
from seqjax import metrics
from seqjax import sharding
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.errors import SeqjaxError
from seqjax.models import ModelSettings, Seq2Seq
from tests.simulated_devices import EIGHT_CPU_DEVICES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, **extra}


def _setup(n=192, dtype=jnp.float32, units=16, lr=0.01):
  data = reverse_data.generate(np.random.default_rng(0), n, 4, 2, 9)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9,
                  settings=ModelSettings(units=units), dtype=dtype)
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam", lr))
  return model, state, data, train_lib.make_seq2seq_loss(model)


class _Rows:
  def __init__(self):
    self.rows = []

  def write(self, row):
    self.rows.append(row)


def test_one_device_mesh_equals_the_plain_path():
  cfg = train_lib.FitConfig(batch_size=32, epochs=2, steps_per_call=4,
                            log_every_steps=2)
  results = []
  for mesh in (None, sharding.make_mesh(1)):
    _, state, data, loss_fn = _setup()
    log = _Rows()
    state, stats = train_lib.fit(state, data, loss_fn, cfg, mesh=mesh,
                                 metrics_log=log)
    assert stats.compiles == 1 and int(state.step) == 12
    results.append((state.params, [r["loss"] for r in log.rows]))
  assert results[0][1] == results[1][1]
  jax.tree.map(np.testing.assert_array_equal, results[0][0], results[1][0])


@pytest.mark.full
def test_eight_simulated_devices_match_one_device(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "tests.multidevice_worker", str(tmp_path)],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=_env(XLA_FLAGS=EIGHT_CPU_DEVICES))
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  print("8 devices vs 1:", {k: r[k] for k in ("loss_diff", "param_diff")})
  assert r["device_count"] == 8 and r["steps"] == [12, 12]
  assert r["n_losses"] == [12, 12]          # one loss per step, compared
  assert r["loss_diff"] <= 1e-5 and r["param_diff"] <= 1e-5
  assert r["compiles_8"] == 1
  # Parameters replicated on all 8; the batch split (gradients all-reduced).
  assert r["param_devices_8"] == 8 and r["replicated_8"]
  assert r["all_reduce_in_hlo"] and not r["all_gather_in_hlo"]
  assert r["local_row_gather"]  # (4 rows, 4 source tokens) per device
  # Batch 12 on 8 devices is refused, naming both flags.
  for key in ("errors_indivisible", "errors_default_devices"):
    assert len(r[key]) == 1
    assert "--batch_size=12" in r[key][0] and "--num_devices" in r[key][0]
  assert r["errors_ok"] == []
  # The binary trained on 8 devices; resumed on 1 from that checkpoint.
  assert r["run_8"]["step"] == 10 and r["run_8"]["train_compiles"] == 1
  assert r["run_resumed_1"]["step"] == 20


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.full
def test_two_processes_end_with_identical_parameters(tmp_path):
  """Exactly BUILD.md's two-process launch, on CPU with a loopback
  coordinator: each process feeds half of every batch."""
  flags = ["--n_features=9", "--n_steps_in=4", "--n_steps_out=2",
           "--n_units=16", "--n_samples=640", "--batch_size=32",
           "--n_eval=64", "--n_examples=0", "--learning_rate=0.01",
           f"--workdir={tmp_path}/run", "--num_processes=2",
           f"--coordinator_address=127.0.0.1:{_free_port()}"]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.reverse", *flags,
       f"--process_id={i}"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=240)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  found = [re.findall(r"\[process (\d)/2\] Parameters at step (\d+): sha256 "
                      r"([0-9a-f]{64})", out) for out in outs]
  assert [f[0][0] for f in found] == ["0", "1"]
  assert found[0][0][1] == found[1][0][1] == "20"   # 640 / 32 steps
  assert found[0][0][2] == found[1][0][2]
  results = json.load(open(tmp_path / "run" / "results.json"))
  assert results["flags"]["process_id"] == 0 and results["step"] == 20
  assert len(results["devices"]) == 2  # one CPU device in each process


@pytest.mark.parametrize("flags,names", [
    ({"num_devices": 10_000}, ["--num_devices=10000", "device(s) are present"]),
    ({"num_devices": -1}, ["--num_devices"]),
    ({"num_processes": 2}, ["--coordinator_address"]),
    ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"},
     ["--process_id=2"]),
    ({"num_processes": 0}, ["--num_processes"]),
    ({"dtype": "float16"}, ["--dtype"]),
])
def test_device_flags_are_checked_before_any_work(flags, names, tmp_path):
  cfg = reverse.ReverseConfig(workdir=str(tmp_path / "w"), **flags)
  errors = cfg.validate() or cfg.device_errors()
  assert len(errors) == 1 and all(n in errors[0] for n in names), errors
  with pytest.raises(SeqjaxError, match=re.escape(names[0])):
    reverse.run(cfg)
  assert not (tmp_path / "w").exists()


def test_make_mesh_refuses_more_devices_than_present():
  with pytest.raises(SeqjaxError, match=f"asked for {jax.device_count() + 1} "
                     f"devices but only {jax.device_count()} "):
    sharding.make_mesh(jax.device_count() + 1)
  mesh = sharding.make_mesh(0)
  assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()


def test_bfloat16_computes_in_bf16_keeps_float32_state_and_trains():
  model, state, data, loss_fn = _setup(n=2048, dtype=jnp.bfloat16, units=32)
  batch = {k: v[:32] for k, v in data.items()}
  jaxpr = str(jax.make_jaxpr(loss_fn)(state.params, batch))
  assert re.search(r"bf16\[32,128\] = dot_general", jaxpr)  # gates in bf16
  loss0, _ = loss_fn(state.params, batch)
  assert loss0.dtype == jnp.float32
  cfg = train_lib.FitConfig(batch_size=32, epochs=3, log_every_steps=64)
  log = _Rows()
  state, _ = train_lib.fit(state, data, loss_fn, cfg, metrics_log=log)
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  losses = [r["loss"] for r in log.rows]
  assert losses[-1] < 0.25 * float(loss0), (float(loss0), losses)
  decoder = decoding.make_decoder(model, max_len=2, start_id=0)
  fresh = reverse_data.generate(np.random.default_rng(1), 256, 4, 2, 9)
  acc = metrics.exact_sequence_accuracy(
      np.asarray(decoder(state.params, fresh["src"])), fresh["target"])
  assert acc >= 0.8, acc


def test_dtype_flag_reaches_the_model_and_is_never_ignored(tmp_path):
  assert reverse.build_model(
      reverse.ReverseConfig(dtype="bfloat16")).dtype == jnp.bfloat16
  assert reverse.build_model(reverse.ReverseConfig()).dtype == jnp.float32
  # A task that forgets to pass --dtype to its model is stopped, not ignored.
  model, state, data, loss_fn = _setup()
  config = reverse.ReverseConfig(dtype="bfloat16", workdir=str(tmp_path))
  with pytest.raises(SeqjaxError, match="dtype=bfloat16: this task's model"):
    runner.train_or_restore(
        model=model, params=state.params, config=config,
        workdir=str(tmp_path), model_config={}, data=data, loss_fn=loss_fn)
  assert not os.listdir(tmp_path)
