"""Sentence-pair files of the Tatoeba / Anki collection (``cmn.txt``, ...).

One pair a line, UTF-8, tab-separated: source, target and, in most copies, an
attribution field (some copies have only the first two). A BOM at the start
and CRLF line ends are accepted. Blank lines are skipped. Any other line that
is not two or three fields with a non-empty source and target, is not UTF-8,
or holds a NUL byte or a carriage return (the marks of a UTF-16 file or of
CR-only line ends, whose text would otherwise load as garbage pairs), is
malformed: it is counted with its line number and skipped, or, with
``strict``, stops the load. An empty file, one without a valid pair, a UTF-16
file (refused as a whole) or an unreadable one stops it too.

Splits: ``split_pairs`` (Keras' ``validation_split``: the last fraction) and
``split_random`` (by source sentence, seeded: the split the cmn-eng README
defines for reported results).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from seqjax.errors import ParameterError

BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

HOW_TO_GET = (
    "The English-Chinese pairs are the Tatoeba project's sentences (CC-BY 2.0 "
    "France) as distributed in the Anki pair files: download cmn-eng.zip from "
    "https://www.manythings.org/anki/ and unzip it to get cmn.txt (in this "
    "project's checkouts it lives at ../shared/data/cmn-eng/cmn.txt beside the "
    "repository).")


@dataclasses.dataclass
class PairFile:
  path: str
  pairs: list[tuple[str, str]]
  malformed: list[tuple[int, str]]  # (1-based line number, what is wrong)
  lines_read: int


def _check_line(raw: bytes) -> tuple[Optional[tuple[str, str]], str]:
  """-> (pair, "") for a valid line, (None, reason) otherwise."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return None, (f"not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset "
                  f"{e.start})")
  if "\x00" in line:
    return None, "contains a NUL byte (a UTF-16 line?)"
  if "\r" in line:
    return None, "contains a carriage return (CR-only line ends?)"
  fields = line.split("\t")
  if len(fields) not in (2, 3):
    return None, (f"expected 2 or 3 tab-separated fields, found "
                  f"{len(fields)}")
  source, target = fields[0].strip(), fields[1].strip()
  if not source or not target:
    return None, f"empty {'source' if not source else 'target'} field"
  return (source, target), ""


def load_pairs(path: str, num_samples: Optional[int] = None,
               strict: bool = False) -> PairFile:
  """Reads the first ``num_samples`` valid pairs (all when None).

  Raises ParameterError (naming ``path`` and the file, or ``strict`` and the
  line) for a missing or empty file, a file without a valid pair, or, with
  ``strict``, the first malformed line.
  """
  if not os.path.isfile(path):
    raise ParameterError("path", path, f"no such file. {HOW_TO_GET}")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ParameterError("path", path,
                         f"cannot read it ({e.strerror})") from e
  if data.startswith(UTF16_BOMS):
    raise ParameterError("path", path, "the file is UTF-16 (it starts with a "
                         "UTF-16 byte order mark); convert it to UTF-8, e.g. "
                         "with iconv -f UTF-16 -t UTF-8.")
  if data.startswith(BOM):
    data = data[len(BOM):]
  if not data.strip():
    raise ParameterError("path", path, "the file is empty: expected one "
                         "sentence pair a line "
                         "(source<TAB>target[<TAB>attribution]).")
  pairs, malformed, lineno = [], [], 0
  lines = data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n")
  for lineno, raw in enumerate(lines, start=1):
    if num_samples is not None and len(pairs) >= num_samples:
      lineno -= 1
      break
    raw = raw.rstrip(b"\r")
    if not raw.strip():
      continue
    pair, reason = _check_line(raw)
    if pair is None:
      if strict:
        raise ParameterError("strict", True, f"{path}:{lineno}: {reason} "
                             "(strict loading stops at a malformed line; "
                             "without it such lines are skipped and counted)")
      malformed.append((lineno, reason))
    else:
      pairs.append(pair)
  if not pairs:
    first = (f"; line {malformed[0][0]}: {malformed[0][1]}" if malformed
             else "")
    raise ParameterError("path", path, f"no valid sentence pair in {lineno} "
                         f"lines ({len(malformed)} malformed{first}). Expected "
                         "source<TAB>target[<TAB>attribution] in UTF-8.")
  return PairFile(path=path, pairs=pairs, malformed=malformed,
                  lines_read=lineno)


def describe_malformed(pair_file: PairFile, limit: int = 10,
                       note: str = "") -> str:
  """One line per malformed line (at most ``limit``), for the run's log;
  ``note`` goes in parentheses after the heading."""
  bad = pair_file.malformed
  if not bad:
    return ""
  lines = [f"Skipped {len(bad)} malformed line(s) of {pair_file.path}"
           + (f" ({note})" if note else "") + ":"]
  lines += [f"  line {n}: {why}" for n, why in bad[:limit]]
  if len(bad) > limit:
    lines.append(f"  ... and {len(bad) - limit} more")
  return "\n".join(lines)


def split_pairs(pairs: list, validation_split: float) -> tuple[list, list]:
  """Keras' ``validation_split``: the last fraction is held out, unshuffled."""
  if not 0.0 < validation_split < 1.0:
    raise ValueError(f"validation_split must be in (0, 1); got "
                     f"{validation_split}")
  split_at = int(len(pairs) * (1.0 - validation_split))
  return pairs[:split_at], pairs[split_at:]


def group_by_source(pairs: list) -> list[tuple[str, list[str]]]:
  """Each distinct source in the order of its first appearance, with all
  its targets in file order."""
  groups: dict[str, list[str]] = {}
  for source, target in pairs:
    groups.setdefault(source, []).append(target)
  return list(groups.items())


@dataclasses.dataclass
class RandomSplit:
  """``split_random``'s sides: training pairs, held-out sentences."""

  train: list[tuple[str, str]]        # every pair of the training sources
  dev: list[tuple[str, list[str]]]    # (source, all its targets)
  test: list[tuple[str, list[str]]]
  n_sources: int                      # distinct sources of all the pairs

  @property
  def n_train_sources(self) -> int:
    return self.n_sources - len(self.dev) - len(self.test)


def split_random(pairs: list, seed: int, num_test: int, num_dev: int
                 ) -> RandomSplit:
  """The random split by source sentence (all the targets of a source fall
  on one side), as the cmn-eng README defines it: the distinct sources in
  order of first appearance, ``numpy.random.default_rng(seed)
  .permutation(n)``; the first ``num_test`` of that order are the test
  set, the next ``num_dev`` the dev set (each in that order, with all its
  targets in file order as references), the rest the training set with
  every one of their pairs (in file order).

  Raises ParameterError for num_test or num_dev below 1 and for num_test +
  num_dev at or above the number of distinct sources (no training sentence
  would be left)."""
  for name, value in (("num_test", num_test), ("num_dev", num_dev)):
    if value < 1:
      raise ParameterError(name, value, "must be at least 1 (held-out "
                           "sentences)")
  groups = group_by_source(pairs)
  n = len(groups)
  if num_test + num_dev >= n:
    raise ParameterError(
        "num_test", num_test, f"num_test + num_dev ({num_test} + {num_dev} "
        f"= {num_test + num_dev}) is at or above the {n} distinct source "
        f"sentences of the {len(pairs)} pairs: no training sentence would "
        "be left")
  order = np.random.default_rng(seed).permutation(n)
  test = [groups[i] for i in order[:num_test]]
  dev = [groups[i] for i in order[num_test:num_test + num_dev]]
  held_out = {groups[i][0] for i in order[:num_test + num_dev]}
  train = [(s, t) for s, t in pairs if s not in held_out]
  return RandomSplit(train=train, dev=dev, test=test, n_sources=n)
