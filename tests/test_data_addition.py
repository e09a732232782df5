"""The addition generator: distinct questions, right answers, padding, reversal."""

import numpy as np
import pytest

from seqjax.data import addition


def _parse(question: str) -> tuple[int, int]:
  a, b = question.strip().split("+")
  return int(a), int(b)


@pytest.mark.parametrize("digits,n,reverse", [
    (3, 3000, True), (3, 3000, False), (2, 4000, True), (1, 55, True)])
def test_questions_answers_padding_and_reversal(digits, n, reverse):
  d = addition.generate(np.random.default_rng(1), n, digits, reverse)
  q_len, a_len = 2 * digits + 1, digits + 1
  assert d["src"].shape == (n, q_len) and d["src"].dtype == np.int32
  assert d["target"].shape == d["dec_in"].shape == (n, a_len)
  questions = addition.decode(d["src"])
  answers = addition.decode(d["target"])
  seen = set()
  for q, ans, a, b in zip(questions, answers, d["a"], d["b"]):
    plain = q[::-1] if reverse else q
    # Padding: spaces after the question (before it once reversed).
    assert plain == plain.rstrip().ljust(q_len)
    assert plain.rstrip() == f"{a}+{b}" and " " not in plain.rstrip()
    x, y = _parse(plain)
    assert 0 <= x < 10 ** digits and 0 <= y < 10 ** digits
    assert ans == str(x + y) + " " * (a_len - len(str(x + y)))
    seen.add((min(x, y), max(x, y)))
  assert len(seen) == n  # no question twice, a+b and b+a counted as one
  # Teacher forcing: the answer shifted right behind the start token.
  np.testing.assert_array_equal(d["dec_in"][:, 0], addition.START_ID)
  np.testing.assert_array_equal(d["dec_in"][:, 1:], d["target"][:, :-1])
  assert d["src"].max() < addition.VOCAB and d["target"].max() < addition.VOCAB


def test_space_is_padding_id_zero_and_table_is_sorted():
  assert addition.CHARS == "".join(sorted(addition.CHARS)) and addition.CHARS[0] == " "
  ids = addition.encode(["12+5 ", "  1+0"], 5)
  assert ids[0].tolist() == [3, 4, 1, 7, 0]
  assert addition.decode(ids) == ["12+5 ", "  1+0"]
  with pytest.raises(ValueError, match="length"):
    addition.encode(["1+1"], 5)


def test_every_question_once_when_all_are_asked():
  # 1 digit: 10 * 11 / 2 = 55 distinct questions; 2 digits: 100 * 101 / 2.
  assert addition.num_distinct_questions(1) == 55
  assert addition.num_distinct_questions(2) == 5050
  for digits in (1, 2):
    total = addition.num_distinct_questions(digits)
    a, b = addition.sample_pairs(np.random.default_rng(0), total, digits)
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    side = 10 ** digits
    assert pairs == {(x, y) for x in range(side) for y in range(x, side)}
    assert (a > b).any() and (a < b).any()  # both orders are asked


def test_operands_are_drawn_as_keras_draws_them():
  # A length in 1..3, then the digits: P(operand < 10) = 1/3 (one digit)
  # + 1/30 (two digits, leading 0) + 1/300 (three digits, two leading 0s).
  x = addition._keras_operands(np.random.default_rng(0), 200_000, 3)
  assert abs((x < 10).mean() - (1 / 3 + 1 / 30 + 1 / 300)) < 0.005
  assert x.min() == 0 and x.max() == 999


def test_generator_is_seeded():
  a = addition.generate(np.random.default_rng(7), 500, 3)
  b = addition.generate(np.random.default_rng(7), 500, 3)
  c = addition.generate(np.random.default_rng(8), 500, 3)
  np.testing.assert_array_equal(a["src"], b["src"])
  assert not np.array_equal(a["src"], c["src"])


def test_impossible_requests_raise():
  with pytest.raises(ValueError, match="digits"):
    addition.generate(np.random.default_rng(0), 5, 0)
  with pytest.raises(ValueError, match="only 55 distinct"):
    addition.generate(np.random.default_rng(0), 56, 1)
