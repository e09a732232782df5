"""Held-out evaluation of a sequence-to-sequence model: loss, decoding, scores.

Task-independent: any model whose evaluation step reads a dict of padded
arrays with a ``target_mask`` and whose decoder reads ``src`` / ``src_mask``.
"""

from __future__ import annotations

import time

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


class HeldOutLoss:
  """An epoch-end evaluation (``Setup.epoch_end``): the token-weighted
  held-out loss and metrics of ``arrays`` (``evaluate_loss``), printed and
  logged as ``val_<name>``; each epoch's seconds and the seconds spent here
  are kept (``epoch_seconds``, ``eval_seconds``)."""

  def __init__(self, eval_step, arrays: dict, batch_size: int, epochs: int):
    self.eval_step, self.arrays = eval_step, arrays
    self.batch_size, self.epochs = batch_size, epochs
    self.epoch_seconds, self.eval_seconds = [], 0.0
    self.t = time.perf_counter()

  def loss(self, params) -> dict:
    return evaluate_loss(self.eval_step, params, self.arrays, self.batch_size)

  def epoch_end(self, state, epoch: int) -> dict:
    t0 = time.perf_counter()
    self.epoch_seconds.append(t0 - self.t)
    row = self.loss(state.params)
    print(f"Epoch {epoch}/{self.epochs}: {self.epoch_seconds[-1]:.1f}s"
          f" val_loss {row['loss']:.4f} val_token_accuracy "
          f"{row['token_accuracy']:.4f}", flush=True)
    self.t = time.perf_counter()
    self.eval_seconds += self.t - t0
    return {f"val_{name}": value for name, value in row.items()}
