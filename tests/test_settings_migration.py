"""Workdirs written before the model settings were nested still load.

``tests/data/translate_v1`` holds two tiny translation workdirs trained by
the code before the change (flat checkpoint records): ``plain`` (the Keras
model, 8 units, with a best checkpoint) and ``luong`` (word level,
embedding 4, two encoder layers, Luong attention with the dot score). Its
``expected.json`` records what that code translated with them (greedy, and
the 2 best of a width-2 beam search); its results.json files the held-out
loss it measured.
"""

import dataclasses
import json
import os
import shutil

import pytest

from experiments import translate
from seqjax import averaging
from seqjax import decoding
from seqjax import runner
from seqjax import translation
from seqjax.checkpoint import Checkpointer
from seqjax.settings import RECORD_KEY, ModelSettings, upgrade_record

DATA = os.path.join(os.path.dirname(__file__), "data", "translate_v1")
NAMES = ("plain", "luong")

with open(os.path.join(DATA, "expected.json"), encoding="utf-8") as f:
  EXPECTED = json.load(f)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """Copies of the old workdirs (a run writes into its workdir), their
  recorded pair file pointed at the copy of the pairs."""
  root = tmp_path_factory.mktemp("v1")
  pairs = str(root / "pairs.txt")
  shutil.copyfile(os.path.join(DATA, "pairs.txt"), pairs)
  out = {}
  for name in NAMES:
    workdir = str(root / name)
    shutil.copytree(os.path.join(DATA, name), workdir)
    results_path = os.path.join(workdir, "results.json")
    with open(results_path, encoding="utf-8") as f:
      results = json.load(f)
    results["flags"].update(data_path=pairs, workdir=workdir)
    with open(results_path, "w", encoding="utf-8") as f:
      json.dump(results, f)
    out[name] = workdir
  return out


def _flags(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    return json.load(f)["flags"]


def _old_record(name: str) -> dict:
  with open(os.path.join(DATA, name, "checkpoints", "3", "config",
                         "metadata"), encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.parametrize("name", NAMES)
def test_old_record_upgrades_to_the_settings_its_flags_make(name, workdirs):
  old = _old_record(name)
  assert RECORD_KEY not in old and "latent_dim" in old  # the flat form
  spec = translate.model_spec(translate.TranslateConfig(
      **_flags(workdirs[name])))
  new = upgrade_record(old)
  assert new[RECORD_KEY] == spec.settings.record()
  assert ModelSettings.from_record(new[RECORD_KEY]) == dataclasses.replace(
      spec.settings, dropout=0.0)
  # The keys beside the architecture are kept as they were.
  moved = {"latent_dim", "cell", "embedding_dim", "encoder_layers",
           "decoder_layers", "bidirectional", "attention", "attention_score",
           "input_feeding"}
  assert {k: v for k, v in new.items() if k != RECORD_KEY} == {
      k: v for k, v in old.items() if k not in moved}
  assert upgrade_record(new) == new


def test_other_tasks_records_are_left_alone():
  reverse = {"task": "reverse", "n_units": 8, "cell": "lstm"}
  assert upgrade_record(reverse) == reverse


@pytest.mark.parametrize("name", NAMES)
def test_old_workdir_translates_as_the_old_code_did(name, workdirs):
  expected = EXPECTED[name]
  sentences = expected["sentences"]
  greedy = translation.load_translator(workdirs[name])
  assert greedy.step == expected["step"]
  assert [t.decoded for t in greedy.translate(sentences)] == expected[
      "greedy"]
  beam = translation.load_translator(
      workdirs[name], strategy=decoding.BeamSearch(2), n_best=2)
  for got, want in zip(beam.translate(sentences), expected["beam2"]):
    assert [text for text, _ in got.n_best] == [text for text, _ in want]
    assert [s for _, s in got.n_best] == pytest.approx(
        [s for _, s in want], abs=1e-4)


def test_old_workdirs_load_as_an_ensemble(workdirs):
  """Two copies of one model average to that model."""
  plain = workdirs["plain"]
  ensemble = translation.load_ensemble([plain, plain])
  sentences = EXPECTED["plain"]["sentences"]
  assert [t.decoded for t in ensemble.translate(sentences)] == EXPECTED[
      "plain"]["greedy"]


def test_old_checkpoints_average(workdirs, tmp_path):
  """The latest and the best checkpoint (one state) average to it."""
  plain = workdirs["plain"]
  sources = (averaging.last_checkpoints(plain, 1)
             + averaging.best_checkpoints(plain, 1))
  to = str(tmp_path / "averaged")
  averaging.average(sources, to, "last and best")
  sentences = EXPECTED["plain"]["sentences"]
  got = translation.load_translator(to).translate(sentences)
  assert [t.decoded for t in got] == EXPECTED["plain"]["greedy"]


@pytest.mark.parametrize("name", NAMES)
def test_old_workdir_resumes(name, workdirs):
  """What a resumed run must match is what the old checkpoint records."""
  config = translate.TranslateConfig(**_flags(workdirs[name]))
  setup = translate.TranslateTask().setup(config, workdirs[name])
  checkpointer = Checkpointer(
      workdirs[name], runner.checkpoint_config(setup.model_config, config))
  try:
    assert checkpointer.check_compatible() == EXPECTED[name]["step"]
  finally:
    checkpointer.close()


def test_old_workdir_evaluates_as_the_old_code_did(workdirs, capsys):
  workdir = workdirs["plain"]
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    before = json.load(f)
  results = translate.run(translate.TranslateConfig(
      workdir=workdir, eval_only=True, progress="none"))
  assert results["val_loss"] == pytest.approx(before["val_loss"], abs=1e-5)
  assert results["val_chrf"] == pytest.approx(before["val_chrf"], abs=1e-6)
  assert results["step"] == before["step"]
