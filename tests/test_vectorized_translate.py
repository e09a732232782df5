"""A translate group (length buckets, epoch-end evaluation, model
selection) in the one loop: each member equals its lone run, and a killed
group resumes bit for bit."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import translate
from seqjax import group_runner
from seqjax import reliability
from seqjax import runner
from seqjax.checkpoint import Checkpointer
from tests import group_util
from tests import translate_util

# 80 toy pairs, 60 to train in 2 length buckets: 5 steps an epoch.
SMALL = dict(num_samples=0, validation_split=0.25, latent_dim=8,
             batch_size=10, epochs=2, log_every=2, n_examples=0,
             num_buckets=2, steps_per_call=2, checkpoint_every=2)


def _configs(tmp_path, root, n=4):
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(80))
  return [translate.TranslateConfig(
      data_path=path, seed=i, learning_rate=(0.01, 0.003)[i % 2],
      workdir=str(tmp_path / root / f"seed={i}"), **SMALL) for i in range(n)]


def _params(config):
  setup = translate.TASK.setup(config, config.workdir)
  like = jax.eval_shape(setup.model.init, jax.random.key(0),
                        *setup.init_inputs)
  like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)
  ckpt = Checkpointer(config.workdir, runner.checkpoint_config(
      setup.model_config, config))
  params = ckpt.restore_params(like)
  ckpt.close()
  return jax.tree.leaves(params)


def _scale_error(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) /
                   np.max(np.abs(np.asarray(y)))) for x, y in zip(a, b))


def _rows(config):
  rows = reliability.read_jsonl(os.path.join(config.workdir, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if k not in (
      "steps_per_s", "samples_per_s", "wall_s", "time")
      and not k.startswith("compile")} for r in rows]


def _rows_keys(row):
  return [k for k in row if not k.startswith("compile")]


def test_translate_group_equals_lone_runs(tmp_path):
  group = _configs(tmp_path, "group")
  assert group_runner.run_group(translate.TASK, group) == [None] * 4
  params = [_params(c) for c in group]
  for i, c in enumerate(_configs(tmp_path, "lone")):
    lone = translate.run(c)
    assert _scale_error(params[i], _params(c)) < 1e-5
    mine = reliability.read_jsonl(os.path.join(group[i].workdir,
                                               "metrics.jsonl"))
    theirs = reliability.read_jsonl(os.path.join(c.workdir, "metrics.jsonl"))
    assert [r["step"] for r in mine] == [r["step"] for r in theirs]
    # Compile figures depend on what the process compiled before: not keys.
    assert [sorted(_rows_keys(r)) for r in mine] == [
        sorted(_rows_keys(r)) for r in theirs]
    evals = [r for r in mine if r.get("eval")]
    assert len(evals) == 2 and all("improved" in r for r in evals)
    for a, b in zip(mine, theirs):
      if "loss" in a:
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    res = json.load(open(os.path.join(group[i].workdir, "results.json")))
    assert res["selected_step"] == lone["selected_step"]
    assert res["vectorized"]["members"] == 4
  assert _scale_error(params[1], params[0]) > 1e-2  # members differ


@pytest.mark.full
def test_killed_translate_group_resumes_bit_for_bit(tmp_path, monkeypatch):
  whole = _configs(tmp_path, "whole")
  assert group_runner.run_group(translate.TASK, whole) == [None] * 4
  cut = _configs(tmp_path, "cut")
  saved = group_util.interrupt_group(translate.TASK, cut, monkeypatch)
  assert all(s and s[-1] < 10 for s in saved), saved
  assert group_runner.run_group(translate.TASK, cut) == [None] * 4
  for a, b in zip(whole, cut):
    assert all(np.array_equal(x, y) for x, y in zip(_params(a), _params(b)))
    evals = lambda c: [r for r in _rows(c) if r.get("eval")]
    assert len(evals(a)) == 2 and evals(b) == evals(a)
