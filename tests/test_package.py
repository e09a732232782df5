"""The package's files: what it holds, its LICENSE, and results.json's
permissions."""

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

from seqjax import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# md5 of the Apache License 2.0 as published (LICENSE-2.0.txt).
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def _pyproject() -> str:
  with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
    return f.read()  # tomllib is Python 3.11+; the package says 3.10


def _library_packages() -> list[str]:
  """seqjax and its subpackages: the folders under seqjax/ with an
  __init__.py, found by walking the tree."""
  found = []
  for folder, _, files in os.walk(os.path.join(ROOT, "seqjax")):
    if "__init__.py" in files:
      found.append(os.path.relpath(folder, ROOT).replace(os.sep, "."))
  return sorted(found)


def test_package_discovery_finds_seqjax_only():
  """The binaries and benchmarks run from the checkout: no top-level
  `experiments` or `benchmarks` package lands in site-packages."""
  import setuptools  # pylint: disable=g-import-not-at-top
  section = re.search(r"^\[tool\.setuptools\.packages\.find\]\n"
                      r"include = \[(.*)\]$", _pyproject(), re.M)
  include = re.findall(r'"([^"]+)"', section.group(1))
  found = setuptools.find_packages(ROOT, include=include)
  assert sorted(found) == _library_packages()
  assert "seqjax.data" in found  # the walk saw the subpackages
  for name in ("experiments", "benchmarks", "tests"):
    assert os.path.exists(os.path.join(ROOT, name, "__init__.py"))
    assert name not in found


def test_the_built_wheel_holds_seqjax_only(tmp_path):
  """A wheel built from the checkout's files (a copy: the build writes
  build/ and *.egg-info beside pyproject.toml)."""
  src = tmp_path / "src"
  shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
      ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__"))
  build = ("import sys; from setuptools import build_meta; "
           "print(build_meta.build_wheel(sys.argv[1]))")
  out = subprocess.run([sys.executable, "-c", build, str(tmp_path)],
                       cwd=src, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  with zipfile.ZipFile(tmp_path / out.stdout.strip().splitlines()[-1]) as whl:
    names = whl.namelist()
  tops = {n.split("/")[0] for n in names}
  assert tops == {"seqjax", "seqjax-0.1.0.dist-info"}, sorted(tops)
  modules = {os.path.dirname(n).replace("/", ".") for n in names
             if n.endswith("/__init__.py")}
  assert sorted(modules) == _library_packages()


def test_license_file_is_the_one_pyproject_names():
  pyproject = _pyproject()
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
