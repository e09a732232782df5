"""The addition task of Keras' ``addition_rnn`` example: "535+61" -> "596".

As in the example: each operand has 1..``digits`` digits (the number of digits
drawn uniformly, then each digit), no question is asked twice (a+b and b+a
count as one: duplicates are detected by the sorted pair), the question is
padded with spaces to ``question_len = digits + 1 + digits`` and, with
``reverse``, reversed ("535+61 " -> " 16+535"); the answer is padded with
spaces to ``answer_len = digits + 1``.

Characters map to ids through Keras' ``CharacterTable`` (sorted characters), so
the space, the padding, is id 0. For teacher forcing the decoder input is the
answer shifted right behind ``START_ID``, a token of the target vocabulary
only (``TARGET_VOCAB`` = 13; the source and the predicted vocabulary keep
Keras' 12 characters).
"""

from __future__ import annotations

import numpy as np

CHARS = " +0123456789"   # sorted, as Keras' CharacterTable: " " (pad) is 0
VOCAB = len(CHARS)       # 12: source characters and predicted characters
START_ID = VOCAB         # the decoder's start token (teacher forcing only)
TARGET_VOCAB = VOCAB + 1
START_CHAR = "="         # how START_ID prints
MAX_DIGITS = 18          # operands and sums must fit in int64
MAX_ENUMERATED = 10 ** 7  # beyond: at most half of all questions (see below)

_CHAR_TO_ID = {c: i for i, c in enumerate(CHARS)}


def question_len(digits: int) -> int:
  return 2 * digits + 1


def answer_len(digits: int) -> int:
  return digits + 1


def num_distinct_questions(digits: int) -> int:
  """Unordered pairs {a, b} of operands in 0 .. 10**digits - 1."""
  n = 10 ** digits
  return n * (n + 1) // 2


def encode(strings: list[str], length: int) -> np.ndarray:
  """Strings of exactly ``length`` table characters -> int32 ids (N, length)."""
  ids = np.zeros((len(strings), length), np.int32)
  for i, s in enumerate(strings):
    if len(s) != length:
      raise ValueError(f"{s!r} has length {len(s)}, not {length}")
    ids[i] = [_CHAR_TO_ID[c] for c in s]
  return ids


def decode(ids) -> list[str]:
  """int ids (N, T) -> strings; ``START_ID`` prints as ``START_CHAR``."""
  table = CHARS + START_CHAR
  return ["".join(table[i] for i in row) for row in np.asarray(ids)]


def question_strings(a: np.ndarray, b: np.ndarray, digits: int,
                     reverse: bool) -> list[str]:
  """The questions "a+b" padded with spaces (and reversed) as fed to the model."""
  width = question_len(digits)
  out = [f"{x}+{y}".ljust(width) for x, y in zip(a.tolist(), b.tolist())]
  return [q[::-1] for q in out] if reverse else out


def answer_strings(a: np.ndarray, b: np.ndarray, digits: int) -> list[str]:
  width = answer_len(digits)
  return [str(x + y).ljust(width) for x, y in zip(a.tolist(), b.tolist())]


def _keras_operands(rng: np.random.Generator, n: int, digits: int
                    ) -> np.ndarray:
  """n operands as Keras draws them: a length in 1..digits, then the digits."""
  lengths = rng.integers(1, digits + 1, size=n)
  return rng.integers(0, 10 ** lengths, dtype=np.int64)


def sample_pairs(rng: np.random.Generator, n: int, digits: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """n operand pairs (a, b), no unordered pair twice.

  Up to half of all distinct questions, pairs are drawn as in Keras (its loop
  skips a pair whose sorted version was seen; here vectorized: draw many, keep
  first occurrences in draw order). Beyond half, that rejection loop would need very
  many draws for the last pairs, so n of all distinct pairs are taken
  uniformly instead, each in a random order.
  """
  total = num_distinct_questions(digits)
  if not 1 <= digits <= MAX_DIGITS:
    raise ValueError(f"digits must lie in 1..{MAX_DIGITS}; got {digits}")
  if not 0 <= n <= total:
    raise ValueError(f"there are only {total} distinct questions with {digits}"
                     f" digit(s); asked for {n}")
  if 2 * n > total:
    if total > MAX_ENUMERATED:
      raise ValueError(f"asked for {n} of the {total} distinct questions with "
                       f"{digits} digits; more than half is supported only up "
                       f"to {MAX_ENUMERATED} distinct questions")
    side = 10 ** digits
    lo, hi = np.triu_indices(side)          # every pair a <= b once
    chosen = rng.permutation(total)[:n]
    swap = rng.random(n) < 0.5
    lo, hi = lo[chosen], hi[chosen]
    return (np.where(swap, hi, lo).astype(np.int64),
            np.where(swap, lo, hi).astype(np.int64))
  a = np.zeros(0, np.int64)
  b = np.zeros(0, np.int64)
  new_per_draw = 1.0
  while True:
    # Draw what is still missing divided by the last round's share of new
    # pairs, then dedup the whole draw sequence keeping first occurrences:
    # what Keras' skip-if-seen loop would keep from the same draws.
    missing = n - len(a)
    m = int(missing / new_per_draw * 1.1) + 64
    a = np.concatenate([a, _keras_operands(rng, m, digits)])
    b = np.concatenate([b, _keras_operands(rng, m, digits)])
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    first.sort()
    new_per_draw = max((len(first) - (n - missing)) / m, 1e-3)
    a, b = a[first], b[first]
    if len(a) >= n:
      return a[:n], b[:n]


def generate(rng: np.random.Generator, n: int, digits: int = 3,
             reverse: bool = True) -> dict[str, np.ndarray]:
  """-> {"src": (N, question_len), "dec_in": (N, answer_len),
  "target": (N, answer_len), "a": (N,), "b": (N,)}; ids are int32."""
  a, b = sample_pairs(rng, n, digits)
  target = encode(answer_strings(a, b, digits), answer_len(digits))
  dec_in = np.concatenate(
      [np.full((n, 1), START_ID, np.int32), target[:, :-1]], axis=1)
  return {"src": encode(question_strings(a, b, digits, reverse),
                        question_len(digits)),
          "dec_in": dec_in, "target": target, "a": a, "b": b}
