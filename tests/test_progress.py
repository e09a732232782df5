"""seqjax.progress: the bar on a terminal, plain lines elsewhere."""

import io
import os

import pytest

from seqjax import progress


class FakeTty(io.StringIO):

  def isatty(self):
    return True


class Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _run(stream, mode="auto", compile_s=5.0, step_s=0.5, steps=(2, 4, 6, 8,
                                                                 10, 12, 14)):
  """Calls of 2 steps each: the first finishes after compile_s, the others
  after 2 * step_s each."""
  clock = Clock()
  bar = progress.Progress(mode, total_steps=20, steps_per_epoch=10,
                          stream=stream, min_interval=0.0, clock=clock)
  clock.now = compile_s
  for i, step in enumerate(steps):
    if i:
      clock.now += 2 * step_s
    bar.update(step, loss=1.0 / step if step % 4 == 0 else None)
  bar.close()
  return bar


def test_bar_on_a_terminal_shows_rate_and_eta_without_compile_time():
  tty = FakeTty()
  bar = _run(tty, steps=(2, 4))
  out = tty.getvalue()
  assert bar.mode == "bar" and out.startswith("\r")
  # 2 steps in 1 s after the first call: 2 steps/s, 6 steps left in the
  # epoch (3 s) and 16 in the run (8 s). Counting the 5 s compile would give
  # 4 steps / 6 s.
  assert bar.rate == pytest.approx(2.0)
  last = out.rsplit("\r", 1)[1]
  assert "epoch 1/2" in last and "4/10" in last and "2.0 steps/s" in last
  assert "loss 0.2500" in last and "ETA 0:03 (run 0:08)" in last
  assert out.endswith("\n")  # close() ends a bar left mid-line


def test_bar_ends_a_line_per_epoch():
  tty = FakeTty()
  _run(tty)
  lines = tty.getvalue().split("\n")
  assert len(lines) == 3 and lines[2] == ""  # epoch 2 ended by close()
  assert lines[0].rsplit("\r", 1)[1].startswith("epoch 1/2 [" + "=" * 10)
  assert "10/10" in lines[0] and "ETA 0:00 (run 0:05)" in lines[0]
  assert "epoch 2/2" in lines[1] and "4/10" in lines[1]
  # Epoch 2's first call (steps 11-12) is its clock's start; the rate of
  # steps 12-14 alone is 2 steps/s again.
  assert "2.0 steps/s" in lines[1] and "loss 0.0833" in lines[1]


def test_log_lines_off_a_terminal():
  pipe = io.StringIO()
  bar = _run(pipe)
  out = pipe.getvalue()
  assert bar.mode == "log" and "\r" not in out
  lines = out.splitlines()
  # A line for each update given a loss (steps 4, 8, 12) and the epoch end.
  assert [l.split()[3] for l in lines] == ["4/20", "8/20", "10/20", "12/20"]
  assert lines[0] == "epoch 1/2 step 4/20 4/10 2.0 steps/s loss 0.2500 " \
                     "ETA 0:03 (run 0:08)"


def test_none_and_explicit_modes():
  quiet = io.StringIO()
  _run(quiet, mode="none")
  assert quiet.getvalue() == ""
  forced = io.StringIO()
  assert _run(forced, mode="bar").mode == "bar"
  assert "\r" in forced.getvalue()
  assert progress.resolve_mode("auto", FakeTty()) == "bar"
  assert progress.resolve_mode("auto", object()) == "log"  # no isatty
  with pytest.raises(ValueError, match="one of auto, bar, log, none"):
    progress.Progress("fancy", 10, 5, stream=io.StringIO())


def test_one_call_per_epoch_uses_the_run_rate():
  pipe = io.StringIO()
  clock = Clock()
  bar = progress.Progress("log", 30, 10, stream=pipe, clock=clock)
  for step, now in ((10, 7.0), (20, 9.0), (30, 11.0)):
    clock.now = now
    bar.update(step)
  assert bar.rate == pytest.approx(5.0)  # 20 steps in 4 s after the first
  assert pipe.getvalue().splitlines()[0].endswith("? steps/s ETA ? (run ?)")


def test_format_seconds():
  assert [progress.format_seconds(s) for s in (None, 0, 7.4, 754, 3723)] == [
      "?", "0:00", "0:07", "12:34", "1:02:03"]


def test_auto_draws_a_bar_on_a_real_pseudo_terminal():
  master, slave = os.openpty()
  with os.fdopen(slave, "w") as tty, os.fdopen(master, "rb") as reader:
    bar = progress.Progress("auto", 4, 2, stream=tty, min_interval=0.0)
    bar.update(2)
    bar.close()
    assert bar.mode == "bar"
    assert reader.read1(4096).startswith(b"\repoch 1/2 [")


def _run_reverse(args, use_pty):
  """Runs a tiny reverse training; -> what it wrote to stdout and stderr."""
  import os as os_
  import pty
  import subprocess as sp
  import sys as sys_
  root = os_.path.dirname(os_.path.dirname(os_.path.abspath(__file__)))
  cmd = [sys_.executable, "-m", "experiments.reverse", *args]
  env = {**os_.environ, "JAX_PLATFORMS": "cpu"}
  if not use_pty:
    out = sp.run(cmd, cwd=root, env=env, capture_output=True, timeout=300)
    return (out.stdout + out.stderr).decode()
  leader, follower = pty.openpty()
  proc = sp.Popen(cmd, cwd=root, env=env, stdout=follower, stderr=follower)
  os_.close(follower)
  chunks = []
  while True:
    try:
      chunk = os_.read(leader, 4096)
    except OSError:  # the child closed the terminal
      break
    if not chunk:
      break
    chunks.append(chunk)
  proc.wait(timeout=300)
  os_.close(leader)
  return b"".join(chunks).decode(errors="replace")


@pytest.mark.full
def test_the_binary_draws_a_bar_on_a_terminal_and_logs_lines_otherwise(
    tmp_path):
  tiny = ["--n_samples=3200", "--epochs=2", "--n_units=16", "--n_eval=64",
          "--n_examples=0", "--log_every=50"]
  on_tty = _run_reverse(tiny + [f"--workdir={tmp_path}/a"], use_pty=True)
  assert "epoch 2/2 [" in on_tty and "steps/s" in on_tty and "\r" in on_tty
  assert "step 50/200" not in on_tty  # the bar replaces the log lines
  piped = _run_reverse(tiny + [f"--workdir={tmp_path}/b"], use_pty=False)
  assert "step 50/200 epoch 0.50" in piped and "\r" not in piped
  assert "epoch 2/2 [" not in piped


def test_the_callers_run_eta_replaces_the_rate_s():
  # The loop knows the run ends sooner (a time budget): its ETA is shown,
  # with why; the epoch's ETA stays the rate's.
  pipe = io.StringIO()
  clock = Clock()
  bar = progress.Progress("log", total_steps=20, steps_per_epoch=10,
                          stream=pipe, clock=clock)
  bar.update(2, loss=1.0)
  clock.now = 1.0
  bar.update(4, loss=0.5, run_eta=36.0, run_note="time budget")
  assert pipe.getvalue().splitlines()[-1].endswith(
      "ETA 0:03 (run 0:36, time budget)")
  clock.now = 2.0
  bar.update(6, loss=0.5)
  assert pipe.getvalue().splitlines()[-1].endswith("ETA 0:02 (run 0:07)")
