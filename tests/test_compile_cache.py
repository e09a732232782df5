"""The persistent compilation cache of the binaries: a rerun reads its
programs back, numbers never depend on the cache, and a bad cache directory
is a warning, not a failure."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_features=11", "--n_steps_in=4", "--n_steps_out=2",
        "--n_units=16", "--n_samples=640", "--batch_size=32", "--n_eval=20",
        "--n_examples=0", "--progress=none"]


def _reverse(workdir, cache_dir, *extra):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("SEQJAX_COMPILATION_CACHE_DIR", None)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.reverse", f"--workdir={workdir}",
       f"--compilation_cache_dir={cache_dir}", *TINY, *extra],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sha = re.search(r"sha256 ([0-9a-f]{64})", proc.stdout).group(1)
  return sha, proc.stderr


def _entries(cache_dir):
  return {f for f in os.listdir(cache_dir) if not f.startswith(".")}


def test_rerun_reads_the_cache_and_numbers_do_not_change(tmp_path):
  cache = tmp_path / "cache"
  cold, _ = _reverse(tmp_path / "a", cache)
  written = _entries(cache)
  assert written, "the cold run wrote no cache entry"
  warm, _ = _reverse(tmp_path / "b", cache)
  assert warm == cold
  assert _entries(cache) == written  # every program read back
  off, _ = _reverse(tmp_path / "c", "")
  assert off == cold


@pytest.mark.full
def test_garbage_entries_and_unusable_directory_still_give_a_run(tmp_path):
  cache = tmp_path / "cache"
  good, _ = _reverse(tmp_path / "a", cache)
  for name in _entries(cache):
    (cache / name).write_bytes(b"not a compiled program")
  again, err = _reverse(tmp_path / "b", cache)
  assert again == good
  assert "compilation cache" in err
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  blocked, err = _reverse(tmp_path / "c", blocker / "cache")
  assert blocked == good
  warnings = [l for l in err.splitlines() if "is not usable" in l]
  assert len(warnings) == 1 and str(blocker) in warnings[0], err[-2000:]
