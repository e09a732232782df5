"""The translate binary over several length buckets, without the real file:
made-up pairs whose lengths vary, trained until the mapping is learned."""

import json

import pytest

from experiments import translate
from tests import translate_util

_WORDS = ["cat", "dog", "tea", "sun", "red"]
_ZH_WORDS = ["猫", "狗", "茶", "日", "红"]
_ZH_DIGITS = "零一二三四五六七八九"


def _varied_pairs(n=160):
  """"<word> <a digit 1 to 6 times>." -> the word's and each digit's
  character: the lengths vary, the mapping is learnable from 140 pairs."""
  out = []
  for i in range(n):
    digits = str(i // 5 % 10) * (1 + i % 6)
    en = f"{_WORDS[i % 5]} {digits}."
    zh = _ZH_WORDS[i % 5] + "".join(_ZH_DIGITS[int(d)] for d in digits) + "。"
    out.append((en, zh))
  return out


@pytest.mark.full
def test_two_buckets_train_decode_and_beat_a_source_blind_model(tmp_path):
  path = translate_util.write_pairs(tmp_path / "pairs.txt", _varied_pairs())
  cfg = translate.TranslateConfig(
      data_path=path, workdir=str(tmp_path / "w"), num_samples=0,
      validation_split=0.125, latent_dim=64, batch_size=10, epochs=8,
      optimizer="adam", learning_rate=0.02, num_buckets=2, n_examples=2,
      log_every=0)
  data = translate.prepare_data(cfg)
  widths = [(b["src"].shape[1], b["target"].shape[1]) for b in data.buckets]
  assert len(widths) == 2 and widths[0] != widths[1], widths
  for b, (src_w, tgt_w) in zip(data.buckets, widths):
    assert b["src_len"].max() <= src_w and b["target_len"].max() <= tgt_w
  assert sum(len(b["src"]) for b in data.buckets) == len(data.train_pairs)

  results = translate.run(cfg)
  assert results["train_compiles"] == 2  # one per bucket shape
  assert sorted(map(tuple, results["buckets"])) == sorted(
      (len(b["src"]), s, t) for b, (s, t) in zip(data.buckets, widths))
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  val = [r["val_loss"] for r in rows if r.get("eval")]
  baseline = translate_util.position_mode_accuracy(data.train, data.val)
  got = (val, baseline, results["val_token_accuracy"], results["val_chrf"])
  assert len(val) == 8 and val[-1] < 0.5 * val[0], got
  assert results["val_token_accuracy"] > baseline + 0.3, got
  assert results["val_chrf"] > 40, got
