"""Every configs/*.flags file (one per README result) is parsed by its
binary's own flag definitions: its flags exist, its values validate."""

import glob
import os

import pytest
from absl import flags

from experiments import common
from seqjax import task as task_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


def test_there_is_a_config_for_every_task_the_readme_reports():
  tasks = {os.path.basename(p).split("_")[0] for p in FILES}
  assert tasks == {"reverse", "echo", "translate", "addition", "sort"}


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_config_parses_and_validates(path):
  task = task_lib.get(os.path.basename(path).split("_")[0])
  config = common.config_from_flagfile(task, path)
  assert config.validate() == [], path
  lines = [l for l in open(path, encoding="utf-8").read().splitlines()
           if l.startswith("--")]
  assert lines, f"{path} sets no flag"
  for line in lines:  # each value arrived in the config
    name, _, value = line[2:].partition("=")
    assert str(getattr(config, name)).lower() == value.lower(), line


def test_an_unknown_flag_in_a_flagfile_is_refused(tmp_path):
  bad = tmp_path / "reverse_bad.flags"
  bad.write_text("--n_unitz=3\n")
  with pytest.raises(flags.Error, match="n_unitz"):
    common.config_from_flagfile(task_lib.get("reverse"), str(bad))
