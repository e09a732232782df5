"""The library never imports the binaries: ``seqjax`` works installed
alone (the wheel holds seqjax only), and the binaries name their tasks to
it, not the other way round."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ("experiments", "benchmarks", "tests")


def _library_files():
  for folder, _, names in os.walk(os.path.join(ROOT, "seqjax")):
    for name in names:
      if name.endswith(".py"):
        yield os.path.join(folder, name)


def _imported_modules(path):
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module


def test_no_library_module_imports_a_binary():
  found = [(os.path.relpath(p, ROOT), m) for p in _library_files()
           for m in _imported_modules(p) if m.split(".")[0] in BINARIES]
  assert found == []


def test_the_task_registry_starts_empty_and_the_binaries_fill_it():
  script = (
      "import sys\n"
      "from seqjax import task\n"
      "before = task.known()\n"
      "assert not [m for m in sys.modules if m.split('.')[0] == "
      "'experiments'], 'seqjax.task imported experiments'\n"
      "import experiments\n"
      "after = task.known()\n"
      "assert 'experiments.reverse' not in sys.modules\n"
      "assert task.get('reverse').name == 'reverse'\n"
      "print(before, after)\n")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == [
      "[]", "['addition',", "'echo',", "'reverse',", "'sort',",
      "'translate']"]
