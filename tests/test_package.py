"""The package's files: its LICENSE, and results.json's permissions."""

import hashlib
import os
import re
import stat

import pytest

from seqjax import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# md5 of the Apache License 2.0 as published (LICENSE-2.0.txt).
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def test_license_file_is_the_one_pyproject_names():
  with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
    pyproject = f.read()  # tomllib is Python 3.11+; the package says 3.10
  assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
  assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
  with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
    assert hashlib.md5(f.read()).hexdigest() == APACHE_2_MD5


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_json_files_get_the_mode_other_files_get(tmp_path, umask):
  old = os.umask(umask)
  try:
    with open(tmp_path / "metrics.jsonl", "w") as f:  # how other files are made
      f.write("{}\n")
    runner.write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    runner.write_json_atomic(str(tmp_path / "results.json"), {"a": 2})
  finally:
    os.umask(old)
  mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)
  assert mode("results.json") == mode("metrics.jsonl") == 0o666 & ~umask
  assert (tmp_path / "results.json").read_text() == '{\n  "a": 2\n}\n'
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "results.json"]


class Unwritable:

  def __str__(self):
    raise RuntimeError("cannot be written")


def test_a_failed_json_write_leaves_the_old_file(tmp_path):
  path = str(tmp_path / "results.json")
  runner.write_json_atomic(path, {"a": 1})
  with pytest.raises(RuntimeError, match="cannot be written"):
    runner.write_json_atomic(path, {"b": Unwritable()})
  assert open(path).read() == '{\n  "a": 1\n}\n'
  assert os.listdir(tmp_path) == ["results.json"]
