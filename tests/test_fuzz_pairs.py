"""The pair-file loader (``seqjax.data.pairs.load_pairs``), fuzzed.

Random bytes and hand-shaped lines (missing and extra tabs, empty fields,
very long lines, Latin-1 / GBK / UTF-16 lines, BOMs, CRLF / CR / LF mixtures,
blank lines) must end in one of three ways: the valid pairs loaded, the
malformed lines reported with their line numbers, or a ``SeqjaxError`` with a
message; never another exception. Every outcome is checked against
``reference_parse`` below, an independent, deliberately simple reading of the
format the module docstring specifies. Outcome counts print with ``-s``;
``SEQJAX_FUZZ_EXAMPLES=2000`` runs more.
"""

import collections
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqjax.data import pairs as pairs_lib
from seqjax.errors import SeqjaxError

EXAMPLES = int(os.environ.get("SEQJAX_FUZZ_EXAMPLES", 150))
OUTCOMES = collections.defaultdict(collections.Counter)
ASCII_SPACE = b" \t\n\r\x0b\x0c"


def reference_parse(data: bytes, num_samples=None):
  """-> ("empty", [], []) or (None, pairs, malformed line numbers), read the
  simplest way: lines end at LF, a CR before the LF is the CRLF ending; a line
  of ASCII spaces only is blank; a good line is UTF-8 without NUL or CR, with
  2 or 3 tab-separated fields whose first two are not empty once stripped."""
  if data[:3] == b"\xef\xbb\xbf":
    data = data[3:]
  if all(b in ASCII_SPACE for b in data):
    return "empty", [], []
  lines = data.split(b"\n")
  if lines[-1] == b"":
    lines.pop()
  pairs, bad = [], []
  for number, line in enumerate(lines, start=1):
    if num_samples is not None and len(pairs) == num_samples:
      break
    while line[-1:] == b"\r":
      line = line[:-1]
    if all(b in ASCII_SPACE for b in line):
      continue
    try:
      text = line.decode("utf-8")
    except UnicodeDecodeError:
      bad.append(number)
      continue
    fields = text.split("\t")
    if ("\x00" in text or "\r" in text or len(fields) not in (2, 3)
        or not fields[0].strip() or not fields[1].strip()):
      bad.append(number)
      continue
    pairs.append((fields[0].strip(), fields[1].strip()))
  return None, pairs, bad


def test_reference_parse_on_hand_built_bytes():
  # The reference itself, on a case worked out by hand.
  data = (b"\xef\xbb\xbfHi.\t\xe5\x97\xa8\xe3\x80\x82\tCC\r\n"  # 1 good, CRLF
          b"\n"                                # 2 blank
          b"no tab\n"                          # 3 bad
          b"a\tb\tc\td\n"                      # 4 bad: 4 fields
          b" \tx\n"                            # 5 bad: empty source
          b"caf\xe9\tx\n"                      # 6 bad: Latin-1
          b"a\x00\tb\x00\n"                    # 7 bad: NUL
          b"a\tb\rc\td\n"                      # 8 bad: CR inside
          b"Go.\t\xe8\xb5\xb0\xe3\x80\x82")    # 9 good, no final LF
  assert reference_parse(data) == (None, [("Hi.", "嗨。"), ("Go.", "走。")],
                                   [3, 4, 5, 6, 7, 8])
  assert reference_parse(data, 1) == (None, [("Hi.", "嗨。")], [])
  assert reference_parse(b" \r\n\t")[0] == "empty"


# ------------------------------------------------------------ the inputs

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_WORD = st.sampled_from(["Hi.", "Run!", "I'm OK.", "嗨。", "你好", "走。", "ü",
                         "a b", " x ", "\u3000", "\ufeff", "\x85y"])
_FIELD = st.one_of(_WORD, _TEXT, st.just(""), st.just(" "))


@st.composite
def _line(draw):
  """One line's bytes, without its ending, and the class it was drawn as."""
  kind = draw(st.sampled_from(
      ["pair", "pair+attribution", "missing tab", "extra tabs",
       "empty field", "long line", "latin-1", "gbk", "utf-16", "blank",
       "random bytes"]))
  if kind in ("pair", "pair+attribution", "missing tab", "extra tabs",
              "empty field"):
    n = {"pair": 2, "pair+attribution": 3, "missing tab": 1,
         "empty field": draw(st.sampled_from([2, 3]))}.get(
             kind, draw(st.integers(4, 7)))
    fields = [draw(_FIELD) for _ in range(n)]
    if kind == "empty field":
      fields[draw(st.integers(0, 1))] = draw(st.sampled_from(["", " ", "\t"]))
    return "\t".join(fields).encode("utf-8"), kind
  if kind == "long line":
    width = draw(st.sampled_from([10_000, 100_000, 1_000_000]))
    return (("x" * width + "\t" + "字" * (width // 3)).encode("utf-8"), kind)
  if kind in ("latin-1", "gbk", "utf-16"):
    text = draw(st.sampled_from(["café\tx", "naïve\t天真", "你好\t嗨",
                                 "Hi.\t嗨。", "a\tb"]))
    encoding = {"utf-16": "utf-16-le"}.get(kind, kind)
    return text.encode(encoding, errors="replace"), kind
  if kind == "blank":
    return draw(st.sampled_from([b"", b" ", b"\t", b"\t\t", b"\x0c"])), kind
  return draw(st.binary(max_size=40)), kind


@st.composite
def _file(draw):
  lines = draw(st.lists(_line(), max_size=12))
  endings = [draw(st.sampled_from([b"\n", b"\r\n", b"\r", b"\r\r\n"]))
             for _ in lines]
  data = b"".join(l + e for (l, _), e in zip(lines, endings))
  if lines and draw(st.booleans()):  # no final line end
    data = data[:-len(endings[-1])]
  start = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff\xfe",
                                b"\xef\xbb"]))
  return start + data, sorted({k for _, k in lines}) or ["no lines"]


_INPUTS = st.one_of(
    st.tuples(st.binary(max_size=400), st.just(["random bytes"])), _file())


def _check(tmp_path, data: bytes, num_samples, strict: bool) -> str:
  path = tmp_path / "pairs.txt"
  path.write_bytes(data)
  verdict, want_pairs, want_bad = reference_parse(data, num_samples)
  try:
    got = pairs_lib.load_pairs(str(path), num_samples, strict)
  except SeqjaxError as e:
    message = str(e)
    assert str(path) in message, message
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
      assert "UTF-16" in message
      return "refused with message (UTF-16 file)"
    if verdict == "empty":
      assert "is empty" in message
      return "refused with message (empty)"
    if strict and want_bad:  # stops at the first malformed line, named
      assert f"{path}:{want_bad[0]}:" in message, message
      return "refused with message (strict, line named)"
    assert not want_pairs, (message, want_pairs)
    assert "no valid sentence pair" in message
    if want_bad:
      assert f"line {want_bad[0]}:" in message, message
    return "refused with message (no valid pair)"
  assert not data.startswith((b"\xff\xfe", b"\xfe\xff"))
  assert verdict is None and want_pairs
  assert got.pairs == want_pairs
  assert [n for n, _ in got.malformed] == want_bad
  assert all(why for _, why in got.malformed)
  if strict:
    assert not want_bad
  if want_bad:
    text = pairs_lib.describe_malformed(got)
    assert f"line {want_bad[0]}: " in text
    return "loaded, malformed lines reported with line numbers"
  return "loaded"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          database=None, suppress_health_check=list(HealthCheck))
@given(_INPUTS, st.sampled_from([None, None, 1, 3]), st.booleans())
def _fuzz(tmp_path, drawn, num_samples, strict):
  data, classes = drawn
  outcome = _check(tmp_path, data, num_samples, strict)
  for c in classes:
    OUTCOMES[c][outcome] += 1


@pytest.mark.full
def test_fuzzed_pair_files_load_report_or_refuse(tmp_path, capsys):
  _fuzz(tmp_path)  # pylint: disable=no-value-for-parameter
  with capsys.disabled():
    print(f"\npair-file fuzz, {EXAMPLES} files; per input class (a file can "
          "hold several):")
    for c in sorted(OUTCOMES):
      print(f"  {c}: {sum(OUTCOMES[c].values())} {dict(OUTCOMES[c])}")


@pytest.mark.parametrize("data,pairs,bad", [
    (b"a\tb\rc\td\r", [], [1]),                       # CR-only line ends
    ("a\tb\n".encode("utf-16-le"), [], [1]),           # UTF-16 without a BOM
    (b"a\tb\n\xef\xbb\xbfc\td\n", [("a", "b"), ("\ufeffc", "d")], []),
    (b"x" * 2_000_000 + b"\tlong\nok\tfine\n",
     [("x" * 2_000_000, "long"), ("ok", "fine")], []),
])
def test_hand_built_edge_files(tmp_path, data, pairs, bad):
  path = tmp_path / "p.txt"
  path.write_bytes(data)
  if not pairs:
    with pytest.raises(SeqjaxError, match=r"no valid sentence pair.*line 1: "):
      pairs_lib.load_pairs(str(path))
    return
  got = pairs_lib.load_pairs(str(path))
  assert got.pairs == pairs and [n for n, _ in got.malformed] == bad


def test_unreadable_file_is_refused_with_a_message(tmp_path):
  path = tmp_path / "p.txt"
  path.write_bytes(b"a\tb\n")
  os.chmod(path, 0)
  try:
    if os.access(path, os.R_OK):
      pytest.skip("running as root: a mode-0 file is still readable")
    with pytest.raises(SeqjaxError, match="cannot read"):
      pairs_lib.load_pairs(str(path))
  finally:
    os.chmod(path, 0o644)
