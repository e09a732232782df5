"""--ensemble_members=K: K seeds trained as one vectorized group equal K
lone runs, and the group's ensemble decodes as --ensemble over those lone
workdirs; K=1 is a lone run."""

import json
import os

import numpy as np
import pytest

from experiments import translate
from seqjax.errors import SeqjaxError
from tests import translate_util
from tests.test_vectorized_translate import SMALL, _params, _scale_error

SENTENCES = ["dog 12.", "cat 99.", "tea 3.", "sun 47."]
SEED = 3


def _config(path, workdir, **flags):
  return translate.TranslateConfig(
      data_path=path, workdir=str(workdir), **{
          **SMALL, "seed": SEED, "n_attention_plots": 0, "progress": "none",
          **flags})


@pytest.fixture(scope="module")
def group_and_lone(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("members")
  path = translate_util.write_pairs(tmp / "pairs.txt",
                                    translate_util.toy_pairs(80))
  group = translate.run(_config(path, tmp / "group", ensemble_members=2))
  lone = [_config(path, tmp / f"lone{i}", seed=SEED + i) for i in range(2)]
  for c in lone:
    translate.run(c)
  return path, tmp / "group", group, lone


@pytest.mark.full
def test_members_equal_lone_runs_of_seeds_s_and_s_plus_1(group_and_lone):
  path, workdir, results, lone = group_and_lone
  assert results["ensemble_members"] == ["member=0", "member=1"]
  assert results["member_seeds"] == [SEED, SEED + 1]
  assert results["train_seconds"] > 0
  assert results["wall_seconds"] > results["train_seconds"]
  members = [_config(path, workdir / m, seed=SEED + i)
             for i, m in enumerate(results["ensemble_members"])]
  for member, alone in zip(members, lone):
    assert _scale_error(_params(member), _params(alone)) < 1e-5
    mine = json.load(open(os.path.join(member.workdir, "results.json")))
    theirs = json.load(open(os.path.join(alone.workdir, "results.json")))
    assert mine["selected_step"] == theirs["selected_step"]
  assert _scale_error(_params(members[0]), _params(members[1])) > 1e-2
  assert json.load(open(workdir / "results.json"))["val_chrf"] == (
      results["val_chrf"])


@pytest.mark.full
def test_group_ensemble_decodes_as_ensemble_of_the_lone_workdirs(
    group_and_lone):
  _, workdir, results, lone = group_and_lone
  got = translate.run(translate.TranslateConfig(workdir=str(workdir),
                                                translate=SENTENCES))
  want = translate.run(translate.TranslateConfig(
      workdir=lone[0].workdir, ensemble=lone[1].workdir,
      translate=SENTENCES))
  assert [t["decoded"] for t in got["translations"]] == [
      t["decoded"] for t in want["translations"]]
  assert got["ensemble"] == [str(workdir / "member=0"),
                             str(workdir / "member=1")]
  # --eval_only on the group's workdir: the ensemble again, as --ensemble
  # over the lone workdirs scores it; the training record is kept.
  again = translate.run(translate.TranslateConfig(
      workdir=str(workdir), eval_only=True, n_examples=4))
  theirs = translate.run(translate.TranslateConfig(
      workdir=lone[0].workdir, ensemble=lone[1].workdir, eval_only=True,
      n_examples=4))
  assert [e["decoded"] for e in again["examples"]] == [
      e["decoded"] for e in theirs["examples"]]
  assert again["val_chrf"] == results["val_chrf"] == theirs["val_chrf"]
  np.testing.assert_allclose(again["val_loss"], theirs["val_loss"],
                             rtol=1e-4)
  assert again["train_seconds"] == results["train_seconds"]


@pytest.mark.full
def test_one_member_is_todays_single_run(tmp_path):
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  flags = dict(epochs=1, num_buckets=1)
  one = translate.run(_config(path, tmp_path / "one", ensemble_members=1,
                              **flags))
  lone = translate.run(_config(path, tmp_path / "lone", **flags))
  assert "ensemble_members" not in one and "ensemble" not in one
  assert all(np.array_equal(a, b) for a, b in zip(
      _params(_config(path, tmp_path / "one", **flags)),
      _params(_config(path, tmp_path / "lone", **flags))))
  assert one["val_loss"] == lone["val_loss"]
  assert one["val_chrf"] == lone["val_chrf"]


@pytest.mark.parametrize("flags,name", [
    (dict(dropout=0.1), "--dropout"), (dict(ema_decay=0.9), "--ema_decay"),
    (dict(lr_schedule="plateau"), "--lr_schedule"),
    (dict(ensemble="w2"), "--ensemble"), (dict(keep_best_n=2),
                                          "--keep_best_n")])
def test_flags_a_group_cannot_honour_are_refused_by_name(flags, name,
                                                         tmp_path):
  config = translate.TranslateConfig(workdir=str(tmp_path / "w"),
                                     ensemble_members=2, **flags)
  with pytest.raises(SeqjaxError, match=f"--ensemble_members=2 with {name}="):
    translate.run(config)
  assert not os.path.exists(tmp_path / "w")  # before any work
  assert not [e for e in translate.TranslateConfig(
      ensemble_members=1, **{k: v for k, v in flags.items()
                             if k != "ensemble"}).validate()
              if "ensemble_members" in e]
