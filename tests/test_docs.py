"""The docs: the research script runs and learns, the API reference covers
every public module, and every relative link resolves to a tracked file."""

import functools
import glob
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINKED_DOCS = ["README.md", "BUILD.md", "benchmarks/RESULTS.md",
               "benchmarks/TRANSLATE_QUALITY.md"]
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def run_python(args, env_extra=None, timeout=600):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
         **(env_extra or {})}
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_research_script_learns_the_reverse_task():
  done = run_python(["docs/examples/research_script.py"],
                    {"SEQJAX_EXAMPLE_STEPS": "500"})
  assert done.returncode == 0, done.stderr[-3000:]
  found = re.findall(r"^Accuracy: ([0-9.]+)%$", done.stdout, re.M)
  assert len(found) == 1, done.stdout
  # Guessing all 3 targets out of 50 values: 1 in 125,000 sequences.
  assert float(found[0]) > 20.0, done.stdout


def test_research_script_is_short_and_uses_public_names():
  path = os.path.join(ROOT, "docs", "examples", "research_script.py")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert len(text.splitlines()) <= 80
  private = re.findall(r"\b(?:train|models|decode|reverse)\._\w+", text)
  assert not private, private


def package_modules() -> set[str]:
  """Every public module of seqjax, by walking the package's files."""
  package = importlib.import_module("seqjax")
  names = {"seqjax"} | {
      info.name for info in pkgutil.walk_packages(package.__path__, "seqjax.")}
  return {n for n in names if not any(p.startswith("_") for p in n.split("."))}


def documented_modules(text: str) -> set[str]:
  return set(re.findall(r"^## `([\w.]+)`$", text, re.M))


def test_api_generator_covers_every_public_module(tmp_path):
  out = tmp_path / "api.md"
  done = run_python(["docs/make_api.py", f"--out={out}"])
  assert done.returncode == 0, done.stderr[-3000:]
  text = out.read_text(encoding="utf-8")
  assert documented_modules(text) == package_modules()
  # A function's signature and summary, from its own docstring.
  assert "- `def make_seq2seq_loss(model, label_smoothing" in text
  assert "Teacher-forced loss of a ``Seq2Seq``-like model." in text


def test_committed_api_reference_lists_every_public_module():
  with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
    assert documented_modules(f.read()) == package_modules(), (
        "docs/api.md is stale: run python docs/make_api.py")


@functools.lru_cache(maxsize=None)
def tracked_paths() -> frozenset:
  """Tracked files and every folder above one, relative to the root."""
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout")
  paths = set()
  for name in filter(None, out.split("\0")):
    paths.add(name)
    parts = name.split("/")
    paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
  return frozenset(paths)


def doc_files() -> list[str]:
  found = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
  return LINKED_DOCS + sorted(os.path.relpath(p, ROOT) for p in found)


def prose(text: str) -> str:
  """The text outside fenced code blocks and inline code."""
  text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
  return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces
  to hyphens."""
  text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
  kept = "".join(c for c in text if c in " -_" or
                 unicodedata.category(c)[0] in "LN")
  return kept.strip().replace(" ", "-")


def anchors(path: str) -> set[str]:
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    text = re.sub(r"^(```|~~~).*?^\1", "", f.read(), flags=re.M | re.S)
  seen, out = {}, set()
  for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", text, re.M):
    base = slug(heading)
    n = seen.get(base, 0)
    out.add(base if n == 0 else f"{base}-{n}")
    seen[base] = n + 1
  return out


def broken_links(doc: str, text: str = None) -> list[str]:
  """The links of ``doc`` (its text, or ``text`` in its place) that name no
  tracked file or folder, or no heading of a tracked markdown file."""
  if text is None:
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
      text = f.read()
  links = LINK_RE.findall(prose(text))
  broken = []
  for link in links:
    if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, mailto:, ...
      continue
    target, _, anchor = link.partition("#")
    path = os.path.normpath(os.path.join(os.path.dirname(doc), target)
                            ) if target else doc
    path = path.replace(os.sep, "/").rstrip("/")
    if path not in tracked_paths():
      broken.append(f"{doc}: {link} (no tracked {path})")
    elif anchor and path.endswith(".md") and anchor not in anchors(path):
      broken.append(f"{doc}: {link} (no heading #{anchor} in {path})")
  return broken


def test_every_relative_link_resolves():
  docs = doc_files()
  assert "docs/library.md" in docs
  broken = [b for doc in docs for b in broken_links(doc)]
  assert not broken, "\n".join(broken)


def test_link_check_catches_a_missing_file_and_anchor():
  text = ("[ok](../README.md) [gone](../no_such_file.md) `[code](nowhere)` "
          "[bad anchor](../BUILD.md#no-such-heading) [site](https://x.org) "
          "[good anchor](../BUILD.md#install) ![img](attention.png)\n")
  assert [b.split(" ")[1] for b in broken_links("docs/probe.md", text)] == [
      "../no_such_file.md", "../BUILD.md#no-such-heading"]


def test_slug_follows_github():
  assert slug("Beam search (issue 15), 2026-12-02") == (
      "beam-search-issue-15-2026-12-02")
  assert slug("A translator that works: attention on the random split") == (
      "a-translator-that-works-attention-on-the-random-split")
  assert slug("Many devices, mixed precision, learning curves, sweeps") == (
      "many-devices-mixed-precision-learning-curves-sweeps")


def test_cited_benchmark_runs_are_tracked():
  cited = set()
  for doc in doc_files():
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
      cited |= set(re.findall(r"benchmarks/runs/[\w.-]+\.json", f.read()))
  assert cited
  missing = sorted(cited - tracked_paths())
  assert not missing, missing


def test_readme_starts_with_the_two_commands():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0].startswith("# ")
  first = [line for line in lines[1:] if line.strip()][:4]
  assert first == [
      "```bash",
      "pip install -e . && python -m experiments.reverse",
      "pip install -e '.[test]' && python -m pytest -q -n 2 -m \"not full\" tests",
      "```"]


REPO_PATH_RE = re.compile(
    r"(?<![\w./-])((?:seqjax|experiments|benchmarks|tests|configs|scripts|"
    r"docs|\.ci)/[\w./-]*[\w/])(?![\w<*{])")


def cited_paths(text: str) -> set[str]:
  """Repository paths a doc names in its text (placeholders such as
  ``configs/<task>.flags`` left out)."""
  return {m.rstrip("/") for m in REPO_PATH_RE.findall(text)}


def test_cited_paths_finds_paths_and_skips_placeholders():
  assert cited_paths("see `seqjax/train.py`, docs/runs/ and "
                     "configs/echo_<mode>.flags or runs/x") == {
                         "seqjax/train.py", "docs/runs"}


def test_every_cited_repository_path_is_tracked():
  missing = []
  for doc in doc_files():
    if doc == "docs/api.md":  # docstrings' own text
      continue
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
      missing += [f"{doc}: {p}" for p in sorted(cited_paths(f.read()))
                  if p not in tracked_paths()]
  assert not missing, "\n".join(missing)
