"""Helpers of the translate tests: the real pair file, small pair files."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def real_pair_file():
  """$SEQJAX_CMN_PATH, <repo>/../shared/..., /work/shared/...; else None."""
  candidates = [os.environ.get("SEQJAX_CMN_PATH"),
                os.path.join(ROOT, "..", "shared", "data", "cmn-eng",
                             "cmn.txt"),
                "/work/shared/data/cmn-eng/cmn.txt"]
  for path in candidates:
    if path and os.path.isfile(path):
      return path
  return None


NO_REAL_FILE = ("no cmn.txt: set SEQJAX_CMN_PATH or put the Tatoeba pairs at "
                "<repo>/../shared/data/cmn-eng/cmn.txt")

# 50 made-up pairs: "<word> <number>." -> Chinese characters, each English
# word and digit mapped to its own character, so the mapping is learnable.
_WORDS = ["cat", "dog", "tea", "sun", "red"]
_ZH_WORDS = ["猫", "狗", "茶", "日", "红"]
_ZH_DIGITS = "零一二三四五六七八九"


def toy_pairs(n=50):
  out = []
  for i in range(n):
    w = i % len(_WORDS)
    number = str(i // len(_WORDS) * 7 % 10) + str(i % 10)
    en = f"{_WORDS[w]} {number}."
    zh = _ZH_WORDS[w] + "".join(_ZH_DIGITS[int(d)] for d in number) + "。"
    out.append((en, zh))
  return out


def write_pairs(path, pairs_, attribution=True):
  with open(path, "w", encoding="utf-8", newline="") as f:
    for en, zh in pairs_:
      f.write(f"{en}\t{zh}" + ("\tCC-BY 2.0 (France)\n" if attribution
                               else "\n"))
  return str(path)


def train_tiny(tmp, n=40, **flags):
  """A tiny model trained one epoch on ``n`` toy pairs (the last quarter
  held out; sources at most 7 characters) by the binary, with more
  ``flags`` (TranslateConfig fields); -> its workdir."""
  from experiments import translate
  path = write_pairs(tmp / "pairs.txt", toy_pairs(n))
  workdir = str(tmp / "w")
  translate.run(translate.TranslateConfig(
      data_path=path, workdir=workdir, num_samples=0, validation_split=0.25,
      latent_dim=8, batch_size=10, epochs=1, log_every=0, n_examples=0,
      num_buckets=1, **flags))
  return workdir


def position_mode_accuracy(train: dict, val: dict) -> float:
  """Token accuracy on ``val`` of the best model that ignores the source and
  the previous tokens: at each target position, the training split's most
  frequent token there (it includes always emitting the end symbol or "。").
  Only a model that learned from the source beats it."""
  import numpy as np
  width = max(train["target"].shape[1], val["target"].shape[1])
  mode_T = np.zeros(width, np.int64)
  for t in range(train["target"].shape[1]):
    seen = train["target"][train["target_mask"][:, t], t]
    if len(seen):
      mode_T[t] = np.bincount(seen).argmax()
  mask_NT = val["target_mask"]
  hits = val["target"] == mode_T[None, :val["target"].shape[1]]
  return float((hits & mask_NT).sum() / mask_NT.sum())
