"""Faults survived in-process: resume anywhere bit for bit, non-finite steps,
damaged checkpoints, the workdir lock, whole metrics rows, atomic files.
(Kill -9, Ctrl-C and a second process are in test_faults_subprocess.py.)"""

import dataclasses
import functools
import glob
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import reverse as reverse_exp
from seqjax import runner
from seqjax import reliability
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer, CheckpointMismatchError
from seqjax.data import reverse
from seqjax.errors import SeqjaxError
from seqjax.models import ModelSettings, Seq2Seq
from tests import tiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BSZ = 192, 16  # 12 steps an epoch, no partial batch


def _setup(seed=0):
  data = reverse.generate(np.random.default_rng(0), N, 4, 2, 9)
  data["poison"] = np.zeros(N, np.float32)
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=16))
  params = model.init(jax.random.key(seed), data["src"][:1], data["dec_in"][:1])
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer("adam", 0.01))
  return state, data, train_lib.make_seq2seq_loss(model)


def _copy(state):  # fit donates its state; keep the original usable
  return jax.tree.map(lambda x: jnp.asarray(np.array(x)), state)


def _assert_bit_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _poisoned(loss_fn, kind):
  """A batch holding a poisoned example gets a NaN loss ("loss") or a finite
  loss with NaN gradients ("grad")."""

  def poisoned_loss(params, batch):
    loss, aux = loss_fn(params, batch)
    hit = batch["poison"].sum() > 0
    if kind == "loss":
      return loss + jnp.where(hit, jnp.nan, 0.0), aux
    w = params["params"]["readout"]["bias"][0]
    # sqrt'(0) * d(w - w)/dw = inf * 0 = NaN; the value stays 0.
    u = jnp.where(hit, w - w, 1.0)
    return loss + jnp.where(hit, jnp.sqrt(u), 0.0), aux

  return poisoned_loss


def _step_of(example, seed, epoch=0):
  """1-based step (within ``epoch``) whose batch holds ``example``."""
  perm = train_lib.epoch_permutation(seed, epoch, N)
  return int(np.flatnonzero(perm == example)[0]) // BSZ + 1 + epoch * (N // BSZ)


# --------------------------------------------------------------------------
# Resume anywhere: bit for bit, whatever the chunking.

CFG = train_lib.FitConfig(batch_size=BSZ, epochs=2, steps_per_call=5,
                          log_every_steps=7, nonfinite="stop")


def test_resumed_at_any_call_equals_uninterrupted_bit_for_bit(tmp_path):
  state0, data, loss_fn = _setup()
  multi = train_lib.make_multi_step(loss_fn, "stop")  # the binaries' default
  ref, _ = train_lib.fit(_copy(state0), data, loss_fn, CFG, multi_step=multi)
  for stop_after_calls, every in [(1, 3), (6, 0)]:
    work = str(tmp_path / f"{stop_after_calls}")
    calls = itertools.count(1)
    # Checkpoints every 4 steps split the scan into other chunks than ref's.
    part, stats = train_lib.fit(
        _copy(state0), data, loss_fn,
        dataclasses.replace(CFG, checkpoint_every_steps=4),
        checkpointer=Checkpointer(work, {}), multi_step=multi,
        should_stop=lambda: next(calls) >= stop_after_calls)
    assert stats.interrupted and 0 < int(part.step) < 24
    resumed = Checkpointer(work, {}).restore(_copy(state0))
    assert int(resumed.step) == int(part.step)
    final, stats = train_lib.fit(
        resumed, data, loss_fn,
        dataclasses.replace(CFG, checkpoint_every_steps=every),
        checkpointer=Checkpointer(work, {}), multi_step=multi)
    assert int(final.step) == 24 and not stats.interrupted
    _assert_bit_equal(final.params, ref.params)
    _assert_bit_equal(final.opt_state, ref.opt_state)
  # Restored arrays are placed like fresh ones: no second compile on resume.
  assert train_lib.compiles_of(multi) == 1


_GUARD_RUN = """
import dataclasses
from seqjax import compile_cache
compile_cache.use_cpu_flags()
from seqjax import train as train_lib
from tests import test_reliability as t
state0, data, loss_fn = t._setup()
ref, _ = train_lib.fit(t._copy(state0), data, loss_fn, t.CFG,
                       multi_step=train_lib.make_multi_step(loss_fn, "stop"))
plain, _ = train_lib.fit(t._copy(state0), data, loss_fn,
                         dataclasses.replace(t.CFG, nonfinite="ignore"))
t._assert_bit_equal(plain.params, ref.params)
print("bit-equal")
"""


def test_the_nonfinite_guard_changes_no_number_of_a_finite_run():
  # Whether two programs round alike is the compiler's choice: checked in a
  # fresh process compiling as the binaries do, not with the tests' flags.
  proc = subprocess.run([sys.executable, "-c", _GUARD_RUN], cwd=ROOT,
                        env={**os.environ, "XLA_FLAGS": ""},
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "bit-equal" in proc.stdout, (
      proc.stderr[-3000:])


def test_checkpoint_every_secs_saves_after_each_call(tmp_path):
  state0, data, loss_fn = _setup()
  ckpt = Checkpointer(str(tmp_path), {}, max_to_keep=None)
  cfg = train_lib.FitConfig(batch_size=BSZ, epochs=1, steps_per_call=5,
                            log_every_steps=0, checkpoint_every_secs=1e-9)
  train_lib.fit(state0, data, loss_fn, cfg, checkpointer=ckpt)
  # Calls of 5, 5, 2 steps (the epoch ends at 12); a save after each.
  assert ckpt.all_steps() == [5, 10, 12]


# --------------------------------------------------------------------------
# Non-finite loss or gradients.


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_stops_naming_step_and_value_keeps_last_good(tmp_path, kind):
  state0, data, loss_fn = _setup()
  data["poison"][37] = 1.0
  bad = _step_of(37, seed=0)
  assert 2 < bad <= 12
  ckpt = Checkpointer(str(tmp_path), {}, max_to_keep=None)
  log = train_lib.MetricsLog(str(tmp_path / "metrics.jsonl"))
  cfg = train_lib.FitConfig(batch_size=BSZ, epochs=2, steps_per_call=1,
                            log_every_steps=2, checkpoint_every_steps=2,
                            nonfinite="stop")
  multi = train_lib.make_multi_step(_poisoned(loss_fn, kind), "stop")
  value = "loss nan" if kind == "loss" else "gradient norm nan"
  with pytest.raises(reliability.NonFiniteError,
                     match=f"{value}.* at step {bad} .*last good checkpoint "
                     rf"\(step {bad - 1}\)"):
    train_lib.fit(_copy(state0), data, None, cfg, checkpointer=ckpt,
                  metrics_log=log, multi_step=multi)
  assert ckpt.latest_step() == bad - 1
  # Every checkpoint is finite, and the last is exactly the state after
  # bad - 1 steps of a clean run.
  for step in ckpt.all_steps():
    restored = Checkpointer(str(tmp_path), {}).restore(_copy(state0), step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.params))
  calls = itertools.count(1)
  clean = {**data, "poison": np.zeros(N, np.float32)}
  ref, _ = train_lib.fit(_copy(state0), clean, None, cfg, multi_step=multi,
                         should_stop=lambda: next(calls) >= bad - 1)
  _assert_bit_equal(restored.params, ref.params)
  rows = reliability.read_jsonl(log.path)
  assert rows[-1]["nonfinite_step"] == bad and rows[-1]["step"] == bad - 1


# Two steps a call in the fast tier (the bad step inside a call).
@pytest.mark.parametrize("steps_per_call", tiers.tiered([1, 2], {1}, str))
def test_nonfinite_seen_one_call_late_still_keeps_last_good(tmp_path,
                                                            steps_per_call):
  # No log, checkpoint or epoch boundary near the bad step: fit sees its
  # flag only after dispatching the next call, which must skip every step.
  state0, data, loss_fn = _setup()
  data["poison"][37] = 1.0
  bad = _step_of(37, seed=0)
  ckpt = Checkpointer(str(tmp_path), {}, max_to_keep=None)
  cfg = train_lib.FitConfig(batch_size=BSZ, epochs=2,
                            steps_per_call=steps_per_call, log_every_steps=0,
                            nonfinite="stop")
  multi = train_lib.make_multi_step(_poisoned(loss_fn, "loss"), "stop")
  calls = []

  @functools.wraps(multi)  # its name: fit counts its compiles
  def counting(*args):
    calls.append(int(np.asarray(args[4]).sum()))  # valid steps asked for
    return multi(*args)
  with pytest.raises(reliability.NonFiniteError,
                     match=rf"at step {bad} .*last good checkpoint "
                     rf"\(step {bad - 1}\)"):
    train_lib.fit(_copy(state0), data, None, cfg, checkpointer=ckpt,
                  multi_step=counting)
  # The call after the bad one was made (and skipped): one call late.
  assert sum(calls[:-1]) >= bad and len(calls) == -(-bad // steps_per_call) + 1
  assert ckpt.latest_step() == bad - 1 and train_lib.compiles_of(multi) == 1
  restored = Checkpointer(str(tmp_path), {}).restore(_copy(state0))
  clean = {**data, "poison": np.zeros(N, np.float32)}
  ref_cfg = dataclasses.replace(cfg, steps_per_call=1)
  n = itertools.count(1)
  ref, _ = train_lib.fit(_copy(state0), clean, None, ref_cfg,
                         multi_step=multi, should_stop=lambda: next(n) >= bad - 1)
  _assert_bit_equal(restored.params, ref.params)
  _assert_bit_equal(restored.opt_state, ref.opt_state)


def test_skip_nonfinite_updates_skips_and_counts(tmp_path):
  state0, data, loss_fn = _setup()
  data["poison"][[5, 100]] = 1.0
  bad = {_step_of(e, 0, ep) for e in (5, 100) for ep in (0, 1)}
  log = train_lib.MetricsLog(str(tmp_path / "metrics.jsonl"))
  cfg = train_lib.FitConfig(batch_size=BSZ, epochs=2, steps_per_call=1,
                            log_every_steps=6, nonfinite="skip")
  multi = train_lib.make_multi_step(_poisoned(loss_fn, "loss"), "skip")
  state, stats = train_lib.fit(_copy(state0), data, None, cfg,
                               metrics_log=log, multi_step=multi)
  assert stats.nonfinite_skipped == len(bad) and int(state.step) == 24
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  rows = reliability.read_jsonl(log.path)
  assert sum(r["nonfinite_skipped"] for r in rows) == len(bad)
  assert all(np.isfinite(r["loss"]) for r in rows)
  # A skipped step leaves parameters and optimizer state as they were.
  first = min(bad)
  before = _copy(state0)
  if first > 1:
    calls = itertools.count(1)
    before, _ = train_lib.fit(before, data, None, cfg, multi_step=multi,
                              should_stop=lambda: next(calls) >= first - 1)
  kept = _copy(before)
  after, _ = train_lib.fit(before, data, None, cfg, multi_step=multi,
                           should_stop=lambda: True)
  assert int(after.step) == first
  _assert_bit_equal(after.params, kept.params)
  _assert_bit_equal(after.opt_state, kept.opt_state)
  assert train_lib.compiles_of(multi) == 1


# --------------------------------------------------------------------------
# Damaged checkpoints.


def _three_checkpoints(workdir, max_to_keep=3):
  state0, _, _ = _setup()
  ckpt = Checkpointer(workdir, {"units": 16}, max_to_keep=max_to_keep)
  for s in (1, 2, 3):
    ckpt.save(state0.replace(step=jnp.asarray(s, jnp.int32),
                             params=jax.tree.map(lambda p: p + s,
                                                 state0.params)))
  ckpt.close()
  return state0


def _damage(step_dir, how):
  if how == "truncate_array_data":  # every array file of the state, emptied
    for f in glob.glob(f"{step_dir}/state/**/d/*", recursive=True):
      open(f, "w").close()
  elif how == "truncate_metadata":
    path = f"{step_dir}/state/_METADATA"
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:len(raw) // 2])
  elif how == "delete_config":
    os.unlink(f"{step_dir}/config/metadata")
  elif how == "delete_manifest":
    os.unlink(f"{step_dir}/state/manifest.ocdbt")
  elif how == "delete_state_dir":
    shutil.rmtree(f"{step_dir}/state")


DAMAGES = ["truncate_array_data", "truncate_metadata", "delete_config",
           "delete_manifest", "delete_state_dir"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_latest_falls_back_to_newest_good_with_warning(tmp_path, how,
                                                               caplog):
  state0 = _three_checkpoints(str(tmp_path))
  _damage(tmp_path / "checkpoints" / "3", how)
  ckpt = Checkpointer(str(tmp_path), {"units": 16})
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(_copy(state0))
  assert int(restored.step) == 2
  _assert_bit_equal(restored.params,
                    jax.tree.map(lambda p: p + 2, state0.params))
  warning = " ".join(r.getMessage() for r in caplog.records)
  assert "step 3" in warning and "Resuming from step 2" in warning
  # Nothing deleted: the damaged step is set aside, out of retention's way.
  assert os.path.isdir(tmp_path / "checkpoints.damaged" / "3")
  assert ckpt.all_steps() == [1, 2]


def test_retention_never_deletes_the_only_good_checkpoint(tmp_path):
  state0 = _three_checkpoints(str(tmp_path), max_to_keep=2)  # keeps 2, 3
  _damage(tmp_path / "checkpoints" / "3", "truncate_array_data")
  ckpt = Checkpointer(str(tmp_path), {"units": 16}, max_to_keep=2)
  state = ckpt.restore(_copy(state0))
  assert int(state.step) == 2 and ckpt.all_steps() == [2]
  for step in (3, 4):  # the only good one (2) goes only once 3, 4 are saved
    assert ckpt.save(state.replace(step=jnp.asarray(step, jnp.int32)))
    kept = ckpt.all_steps()
    assert kept == [step - 1, step]
    for s in kept:
      Checkpointer(str(tmp_path), {"units": 16}).restore(_copy(state0), s)


def test_all_checkpoints_damaged_is_refused_and_nothing_deleted(tmp_path):
  state0 = _three_checkpoints(str(tmp_path))
  for s in (1, 2, 3):
    _damage(tmp_path / "checkpoints" / str(s), "delete_config")
  with pytest.raises(SeqjaxError, match="No usable checkpoint.*step 3.*step 1"):
    Checkpointer(str(tmp_path), {"units": 16}).restore(_copy(state0))
  assert sorted(os.listdir(tmp_path / "checkpoints.damaged")) == ["1", "2", "3"]


def test_a_save_killed_halfway_is_not_a_step_and_is_cleaned(tmp_path):
  state0 = _three_checkpoints(str(tmp_path))
  tmp = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1700000000"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "_METADATA").write_text('{"tree_metad')  # half written
  ckpt = Checkpointer(str(tmp_path), {"units": 16})
  assert int(ckpt.restore(_copy(state0)).step) == 3
  ckpt.close()
  assert not tmp.exists()


def test_mismatch_is_still_refused_not_taken_for_damage(tmp_path):
  _three_checkpoints(str(tmp_path))
  model = Seq2Seq(src_vocab=9, tgt_vocab=9, settings=ModelSettings(units=32))
  d = reverse.generate(np.random.default_rng(0), 4, 4, 2, 9)
  other = train_lib.create_train_state(
      model, model.init(jax.random.key(0), d["src"][:1], d["dec_in"][:1]),
      train_lib.make_optimizer("adam"))
  with pytest.raises(CheckpointMismatchError, match="does not fit"):
    Checkpointer(str(tmp_path), {"units": 16}).restore(other)
  assert not (tmp_path / "checkpoints.damaged").exists()


# --------------------------------------------------------------------------
# One run per workdir.


def test_lock_refuses_a_second_holder_until_released(tmp_path):
  first = reliability.WorkdirLock(str(tmp_path)).acquire()
  with pytest.raises(reliability.WorkdirBusyError,
                     match=f"pid {os.getpid()}"):
    reliability.WorkdirLock(str(tmp_path)).acquire()
  # A binary stops in resolve_workdir, before loading data or writing.
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(reliability.WorkdirBusyError,
                     match=f"workdir {re.escape(str(tmp_path))} is in use"):
    reverse_exp.run(reverse_exp.ReverseConfig(workdir=str(tmp_path),
                                              n_samples=64, n_eval=4))
  assert sorted(os.listdir(tmp_path)) == before
  first.release()
  reliability.WorkdirLock(str(tmp_path)).acquire().release()


# --------------------------------------------------------------------------
# Whole rows, whole files.


def test_metrics_rows_are_whole_and_a_torn_tail_is_dropped_on_resume(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  log = train_lib.MetricsLog(path)
  for step in (10, 20, 30):
    log.write({"step": step, "loss": 1.0 / step})
  with open(path, "ab") as f:  # a crash in the middle of a row
    f.write(b'{"step": 40, "lo')
  assert [r["step"] for r in reliability.read_jsonl(path)] == [10, 20, 30]
  # Resuming at step 20: row 30 (retrained) and the torn row go.
  assert reliability.prepare_resume(path, 20) == 2
  log.write({"step": 30, "loss": 0.5})
  assert open(path).read().count("\n") == 3
  assert [r["step"] for r in reliability.read_jsonl(path)] == [10, 20, 30]
  assert reliability.prepare_resume(path, 30) == 0


def test_atomic_writes_leave_the_old_file_whole_on_failure(tmp_path,
                                                           monkeypatch):
  path = str(tmp_path / "results.json")
  runner.write_json_atomic(path, {"accuracy": 0.5})
  reliability.write_atomic(str(tmp_path / "vocab.txt"), "a\nb\n")

  def crash(*args):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError):
    runner.write_json_atomic(path, {"accuracy": 0.9})
  with pytest.raises(OSError):
    reliability.write_atomic(str(tmp_path / "vocab.txt"), "c\n")
  assert json.load(open(path)) == {"accuracy": 0.5}
  assert open(tmp_path / "vocab.txt").read() == "a\nb\n"
  assert sorted(os.listdir(tmp_path)) == ["results.json", "vocab.txt"]
