"""The persistent compilation cache of the binaries: a rerun reads its
programs back, numbers never depend on the cache, and a bad cache directory
is a warning, not a failure."""

import json
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


# Settings that change numbers but no shape: all changed at once in the
# rerun. The dropout rate and the label smoothing stay constants of the
# programs (as inputs XLA would round the losses otherwise): the same here.
NUMBERS = [dict(learning_rate=0.001, seed=0, clip_norm=1.0, dropout=0.1,
                label_smoothing=0.1, ema_decay=0.9),
           dict(learning_rate=0.003, seed=1, clip_norm=0.5, dropout=0.1,
                label_smoothing=0.1, ema_decay=0.99)]


def _translate(tmp, name, cache_dir, **flags):
  """A tiny translate run with the cache at ``cache_dir`` -> the programs it
  compiled: the names of the entries it added (one per cache miss)."""
  from tests import translate_util
  before = _entries(cache_dir) if os.path.isdir(cache_dir) else set()
  pairs = translate_util.write_pairs(tmp / "pairs.txt",
                                     translate_util.toy_pairs(40))
  args = dict(data_path=pairs, workdir=tmp / name, num_samples=0,
              validation_split=0.25, latent_dim=8, embedding_dim=4,
              level="word", batch_size=10, epochs=1, num_buckets=1,
              n_examples=0, progress="none", compilation_cache_dir=cache_dir)
  args.update(flags)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.translate",
       *[f"--{k}={v}" for k, v in args.items()]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # An entry is "<program name>-<hash>[-cache]".
  return sorted(re.sub(r"-[0-9a-f]{20,}(-cache)?$", "", f)
                for f in _entries(cache_dir) - before)


@pytest.mark.full
def test_numbers_that_keep_shapes_do_not_change_the_programs(tmp_path):
  cache = str(tmp_path / "cache")
  cold = _translate(tmp_path, "a", cache, **NUMBERS[0])
  assert any(p.startswith("jit_train_call") for p in cold), cold
  assert any(p.startswith("jit_eval_step") for p in cold), cold
  assert any(p.startswith("jit__average") for p in cold), cold  # the EMA's
  # Learning rate, seed (initialisation, data order, dropout masks), clip
  # norm and moving-average decay: every program read back.
  assert _translate(tmp_path, "b", cache, **NUMBERS[1]) == []
  # The check can fail: a wider model is a new train and eval program.
  wider = _translate(tmp_path, "c", cache, **{**NUMBERS[1], "latent_dim": 12})
  assert any(p.startswith("jit_train_call") for p in wider), wider
  assert any(p.startswith("jit_eval_step") for p in wider), wider


def _cpu_flags_in_a_fresh_process(xla_flags):
  """-> [flags use_cpu_flags added, $XLA_FLAGS after, flags it adds once
  the backend runs], in a new CPU process."""
  code = ("import os, json, jax; from seqjax import compile_cache as c; "
          "added = c.use_cpu_flags(); after = os.environ.get('XLA_FLAGS'); "
          "jax.numpy.ones(1).block_until_ready(); "
          "print(json.dumps([added, after, c.use_cpu_flags()]))")
  env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def test_binaries_compile_at_the_cpu_flags_unless_the_user_chose():
  from seqjax import compile_cache
  added, after, late = _cpu_flags_in_a_fresh_process("")
  assert added == list(compile_cache.CPU_FLAGS)
  assert after == " ".join(compile_cache.CPU_FLAGS)
  assert late == []  # the backend runs: too late, nothing changes
  mine = "--xla_backend_optimization_level=3 --xla_cpu_enable_fast_math=false"
  added, after, _ = _cpu_flags_in_a_fresh_process(mine)
  assert added == [] and after == mine
