"""The binaries' own reliability set-up: a non-finite step stops the run by
default and is skipped with --skip_nonfinite_updates; SIGTERM saves a
checkpoint and exits 143, a second signal stops at once."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import reverse
from seqjax import reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Adam's first step moves every parameter by ~1e38 (float32 max 3.4e38): the
# second step's matmuls overflow, so its loss is not finite.
BLOW_UP = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=16,
               n_samples=320, batch_size=16, n_eval=20, n_examples=0,
               log_every=5, learning_rate=1e38, epochs=1, steps_per_call=5)


def test_a_nonfinite_step_stops_the_binary_by_default(tmp_path):
  cfg = reverse.ReverseConfig(workdir=str(tmp_path), **BLOW_UP)
  with pytest.raises(reliability.NonFiniteError,
                     match=r"at step 2 .*last good checkpoint \(step 1\)"):
    reverse.run(cfg)


def test_skip_nonfinite_updates_skips_and_counts_in_the_binary(tmp_path):
  cfg = reverse.ReverseConfig(workdir=str(tmp_path),
                              skip_nonfinite_updates=True, **BLOW_UP)
  reverse.run(cfg)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  skipped = sum(r.get("nonfinite_skipped", 0) for r in rows if "loss" in r)
  # Every step after the first leaves the parameters at ~1e38: all skipped.
  assert skipped == 320 // 16 - 1, rows


# One jitted call per epoch (4,000 steps, seconds long): both signals land
# inside the first call.
SLOW = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=64,
            n_samples=64_000, batch_size=16, n_eval=20, n_examples=0,
            log_every=0, epochs=3, steps_per_call=4000)


def _start(workdir, log):
  argv = [sys.executable, "-m", "experiments.reverse",
          f"--workdir={workdir}"] + [f"--{k}={v}" for k, v in SLOW.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def _wait_for(line, proc, log_path, timeout=300):
  deadline = time.monotonic() + timeout
  while line not in open(log_path).read():
    assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
    time.sleep(0.02)


def _checkpoints(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir,
                                                        "checkpoints"))
                if n.isdigit())


@pytest.mark.full
@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_saves_and_exits_143_a_second_stops_at_once(tmp_path,
                                                            signals):
  work, log_path = str(tmp_path / "w"), str(tmp_path / "log")
  with open(log_path, "w") as log:
    proc = _start(work, log)
    _wait_for("Training 12000 steps", proc, log_path)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    if signals == 2:
      # Python runs a handler once for signals that arrive before it runs
      # (the main thread waits inside the call): the second is sent only
      # after the handler has taken the first.
      _wait_for("Caught SIGTERM", proc, log_path)
      proc.send_signal(signal.SIGTERM)
    code = proc.wait(300)
  out = open(log_path).read()
  if signals == 1:
    assert "Traceback" not in out, out[-3000:]
    stopped = int(re.search(
        r"Stopped by SIGTERM at step (\d+); saved a checkpoint", out).group(1))
    assert code == 143 and stopped == 4000, out[-3000:]  # the call's end
    assert _checkpoints(work)[-1] == stopped
  else:
    # (orbax's threads may print shutdown tracebacks after this stop.)
    assert code == 130, out[-3000:]
    assert "Interrupted; nothing after the last checkpoint was saved" in out
    assert "Stopped by SIGTERM" not in out


def test_a_second_signal_whose_interrupt_was_dropped_stops_at_the_next_poll():
  before = signal.getsignal(signal.SIGTERM)
  with reliability.InterruptGuard() as guard:
    assert not guard.requested()
    os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode
    assert guard.requested() and guard.signum == signal.SIGTERM
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(1)  # the handler raises here
    except KeyboardInterrupt:
      pass  # as Python does with an exception raised inside a __del__
    with pytest.raises(KeyboardInterrupt):
      guard.requested()
  assert signal.getsignal(signal.SIGTERM) is before
