"""The real binary under faults, one chained run: Ctrl-C at a random step,
the rerun killed -9 at a later random step (and a second run refused while it
lives), then the same command again. It must finish with parameters equal,
bit for bit, to an uninterrupted run's, compiled once.

The fault points are random; the seed is in the failure message and can be
fixed with SEQJAX_FAULT_SEED=<int>. (Subprocesses cost a JAX import each, so
there are only two.)
"""

import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import reverse
from seqjax import reliability
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer

pytestmark = pytest.mark.full

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=16,
             n_samples=1600, batch_size=16, n_eval=50, n_examples=0,
             log_every=25, learning_rate=0.01, epochs=4, steps_per_call=3)
TOTAL = 1600 // 16 * 4  # 400 steps


def _seed() -> int:
  return int(os.environ.get("SEQJAX_FAULT_SEED") or random.randrange(2**30))


def _start(workdir, log, **extra):
  flags = {**FLAGS, **extra, "workdir": workdir}
  argv = [sys.executable, "-m", "experiments.reverse"] + [
      f"--{k}={v}" for k, v in flags.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def _steps(workdir) -> list[int]:
  names = os.listdir(os.path.join(workdir, "checkpoints")) if os.path.isdir(
      os.path.join(workdir, "checkpoints")) else []
  return sorted(int(n) for n in names if n.isdigit())


def _wait_for_step(proc, workdir, step, log_path, timeout=300):
  deadline = time.monotonic() + timeout
  while not (_steps(workdir) and _steps(workdir)[-1] >= step):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"run ended or stalled before step {step}:\n"
                  + open(log_path).read()[-3000:])
    time.sleep(0.005)


def _final_state(workdir):
  cfg = reverse.ReverseConfig(workdir=str(workdir), **FLAGS)
  model = reverse.build_model(cfg)
  tokens = np.zeros((1, cfg.n_steps_in), np.int32)
  params = model.init(jax.random.key(0), tokens, tokens[:, :cfg.n_steps_out])
  state = train_lib.create_train_state(
      model, params, train_lib.make_optimizer(cfg.optimizer, cfg.learning_rate))
  return Checkpointer(str(workdir), cfg.model_config()).restore(state)


def _assert_same_run(workdir, results, reference):
  ref_results, ref_state = reference
  state = _final_state(workdir)
  assert int(state.step) == TOTAL
  jax.tree.map(np.testing.assert_array_equal, state.params, ref_state.params)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state,
               ref_state.opt_state)
  assert results["accuracy"] == ref_results["accuracy"]
  assert results["train_compiles"] == 1
  rows = [r for r in reliability.read_jsonl(f"{workdir}/metrics.jsonl")
          if "loss" in r]
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)) and steps[-1] == TOTAL
  assert not glob.glob(f"{workdir}/checkpoints/*tmp*")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  work = tmp_path_factory.mktemp("reference")
  results = reverse.run(reverse.ReverseConfig(workdir=str(work), **FLAGS))
  return results, _final_state(work)


def test_ctrl_c_then_kill_9_then_rerun_is_bit_equal(tmp_path, reference):
  seed = _seed()
  rng = random.Random(seed)
  work, log_path = str(tmp_path / "w"), str(tmp_path / "log")

  # 1. Ctrl-C: a checkpoint at the current step, a message, exit 130.
  target = rng.randrange(20, 120)
  with open(log_path, "w") as log:
    proc = _start(work, log, checkpoint_every_secs=0.05)
    _wait_for_step(proc, work, target, log_path)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(120)
  out = open(log_path).read()
  assert code == 130 and "Traceback" not in out, out[-3000:]
  stopped = int(re.search(
      r"Stopped by SIGINT at step (\d+); saved a checkpoint", out).group(1))
  assert target <= stopped < TOTAL and _steps(work)[-1] == stopped, seed

  # 2. The rerun resumes there; a second run is refused while it lives; it is
  # killed -9 at a random step (checkpoints every 10 steps chunk the scan
  # unlike the reference's).
  target = stopped + rng.randrange(10, 120)
  with open(log_path, "w") as log:
    proc = _start(work, log, checkpoint_every=10)
    _wait_for_step(proc, work, target, log_path)
    with pytest.raises(reliability.WorkdirBusyError, match="in use"):
      reverse.run(reverse.ReverseConfig(workdir=work, checkpoint_every=10,
                                        **FLAGS))
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
  out = open(log_path).read()
  assert f"Resumed from the checkpoint at step {stopped} " in out, seed
  killed_at = _steps(work)[-1]
  save_cut = bool(glob.glob(f"{work}/checkpoints/*tmp*"))
  assert killed_at < TOTAL, f"seed {seed}: the run ended before the kill"
  reliability.read_jsonl(f"{work}/metrics.jsonl")  # whole rows only

  # 3. The same command again: the dead process's lock is gone; it resumes
  # from the last checkpoint and ends where the uninterrupted run did.
  results = reverse.run(reverse.ReverseConfig(workdir=work,
                                              checkpoint_every=10, **FLAGS))
  _assert_same_run(work, results, reference)
  print(f"seed {seed}: SIGINT at step {stopped}; kill -9 after checkpoint "
        f"{killed_at} (save cut: {save_cut}); rerun bit-equal")


# --------------------------------------------------------------------------
# A stateful echo run killed -9 between two carry resets.

ECHO_FLAGS = dict(mode="lag_window", seq_length=13, n_sequences=20,
                  n_units=16, batch_size=1, epochs=3, n_eval=5, log_every=0,
                  steps_per_call=2, learning_rate=0.01, checkpoint_every=3)
ECHO_ROWS = 13 - 5  # samples a sequence (batch 1: a reset every 8 steps)
ECHO_TOTAL = 20 * ECHO_ROWS * 3


def _start_echo(workdir, log):
  argv = [sys.executable, "-m", "experiments.echo"] + [
      f"--{k}={v}" for k, v in {**ECHO_FLAGS, "workdir": workdir}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def _fingerprint(out: str) -> str:
  return re.search(rf"Parameters at step {ECHO_TOTAL}: sha256 (\w+)",
                   out).group(1)


def test_stateful_echo_killed_mid_block_resumes_bit_equal(tmp_path, capsys):
  from experiments import echo
  seed = _seed()
  rng = random.Random(seed)
  echo.run(echo.EchoConfig(workdir=str(tmp_path / "ref"), **ECHO_FLAGS))
  want = _fingerprint(capsys.readouterr().out)
  work, log_path = str(tmp_path / "w"), str(tmp_path / "log")
  target = rng.randrange(40, ECHO_TOTAL // 2)
  with open(log_path, "w") as log:
    proc = _start_echo(work, log)
    _wait_for_step(proc, work, target, log_path)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
  killed_at = _steps(work)[-1]
  assert killed_at < ECHO_TOTAL, seed
  if killed_at % ECHO_ROWS == 0:
    # Checkpoints every 3 steps, resets every 8: resume 3 steps earlier,
    # between two resets, as if the kill had come before that save.
    shutil.rmtree(os.path.join(work, "checkpoints", str(killed_at)))
    killed_at -= 3
  with open(log_path, "w") as log:
    proc = _start_echo(work, log)
    assert proc.wait(300) == 0, open(log_path).read()[-3000:]
  out = open(log_path).read()
  resumed = int(re.search(r"Resumed from the checkpoint at step (\d+)",
                          out).group(1))
  assert resumed == killed_at and resumed % ECHO_ROWS, (seed, resumed)
  assert _fingerprint(out) == want, seed
