"""Held-out evaluation of a sequence-to-sequence model: loss, decoding, scores.

Task-independent: any model whose evaluation step reads a dict of padded
arrays with a ``target_mask`` and whose decoder reads ``src`` / ``src_mask``.
"""

from __future__ import annotations

import jax
import numpy as np

from seqjax import decode as decode_lib
from seqjax import metrics
from seqjax.data.vocab import Vocab


def evaluate_loss(eval_step, params, arrays: dict, batch_size: int,
                  mask_key: str = "target_mask") -> dict:
  """``eval_step``'s metrics averaged over target tokens (``arrays``: the
  step's inputs, every array with one row per example).

  Fixed-size batches (the last padded with rows whose mask is all False)
  so the step compiles once."""
  n = len(arrays[mask_key])
  sums, tokens = {}, 0.0
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
    short = batch_size - len(batch[mask_key])
    if short:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], short, 0)])
               for k, v in batch.items()}
      batch[mask_key][-short:] = False
    count = float(batch[mask_key].sum())
    for name, value in jax.device_get(eval_step(params, batch)).items():
      sums[name] = sums.get(name, 0.0) + float(value) * count
    tokens += count
  return {name: total / max(tokens, 1.0) for name, total in sums.items()}


def decode_texts(decoder, params, tgt_vocab: Vocab, arrays: dict,
                 batch_size: int) -> list[str]:
  """``decoder`` over ``arrays["src"]`` (masked by ``src_mask``) in batches
  of ``batch_size``, each output row decoded to text."""
  tokens = decode_lib.decode_in_batches(decoder, params, arrays["src"],
                                        batch_size, arrays["src_mask"])
  return [tgt_vocab.decode(row) for row in tokens]


def score(hypotheses: list[str], references: list[str]) -> dict:
  """Exact match (a fraction), character BLEU and chrF (0-100)."""
  return {"exact_match": float(np.mean([h == r for h, r in
                                        zip(hypotheses, references)])),
          "bleu": metrics.corpus_bleu(hypotheses, references),
          "chrf": metrics.corpus_chrf(hypotheses, references)}
