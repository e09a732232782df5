"""Held-out evaluation of a sequence-to-sequence model: loss, decoding, scores.

Task-independent: any model whose evaluation step reads a dict of padded
arrays with a ``target_mask`` and whose decoder reads ``src`` / ``src_mask``.
A held-out set (``HeldOut``) is its distinct source sentences, each with
all its references; ``score`` is corpus chrF and BLEU by sacrebleu (the
implementation researchers report with: multi-reference, its signature
string beside each score) and exact match against any reference.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence, Union

import jax
import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from seqjax import decoding
from seqjax.data.vocab import Vocab

# sacrebleu's BLEU tokenizer for Chinese: each CJK character a token, other
# text as its default (13a); chrF with sacrebleu's defaults (chrF2).
BLEU_TOKENIZE = "zh"
SIGNATURE_KEYS = ("bleu_signature", "chrf_signature")


@dataclasses.dataclass
class HeldOut:
  """A held-out set: ``sources`` (distinct sentences, or one per pair for a
  single-reference set), each with its ``references``; ``decode_arrays``
  (one row per source: ``src``, ``src_mask``, ...) are what the decoder
  reads, ``loss_arrays`` (one row per (source, reference) pair: the
  evaluation step's inputs) what the held-out loss averages over. ``name``
  prefixes its result keys (``val``, ``dev``, ``test``)."""

  name: str
  sources: list[str]
  references: list[list[str]]
  decode_arrays: dict
  loss_arrays: dict

  @property
  def n_references(self) -> int:
    return sum(len(r) for r in self.references)

  def pairs(self) -> list[tuple[str, str]]:
    """One (source, reference) pair per reference: the loss rows' order."""
    return [(s, r) for s, refs in zip(self.sources, self.references)
            for r in refs]

  def counts(self) -> dict:
    """Sentences, references and unknown source symbols, for results."""
    counts = {f"n_{self.name}": len(self.sources),
              f"n_{self.name}_references": self.n_references}
    if "src_unknown" in self.decode_arrays:
      counts[f"{self.name}_unknown_source_symbols"] = int(
          self.decode_arrays["src_unknown"].sum())
    return counts


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


def _batch_of(arrays: dict, batch_size: int) -> dict:
  """The shapes of one fixed-size batch of ``arrays``."""
  return {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype)
          for k, v in arrays.items()}


def decode_texts(decoder, params, tgt_vocab: Vocab, arrays: dict,
                 batch_size: int, key=None) -> list[str]:
  """``decoder`` over ``arrays["src"]`` (masked by ``src_mask``) in batches
  of ``batch_size`` (a sampling one drawing with ``key``), each output row
  decoded to text."""
  tokens = decoding.decode_in_batches(decoder, params, arrays["src"],
                                      batch_size, arrays["src_mask"], key)
  return [tgt_vocab.decode(row) for row in tokens]


def _reference_lists(references) -> list[list[str]]:
  refs = [[r] if isinstance(r, str) else list(r) for r in references]
  for i, r in enumerate(refs):
    if not r:
      raise ValueError(f"sentence {i} has no reference")
  return refs


def reference_streams(references: Sequence[Union[str, Sequence[str]]]
                      ) -> list[list[Optional[str]]]:
  """Per-sentence references (a string: one) as sacrebleu's reference
  streams: stream j holds each sentence's j-th reference, None where a
  sentence has fewer (sacrebleu drops those: a variable number of
  references, ``nrefs:var`` in its signature)."""
  refs = _reference_lists(references)
  width = max((len(r) for r in refs), default=0)
  return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


def score(hypotheses: list[str],
          references: Sequence[Union[str, Sequence[str]]]) -> dict:
  """Corpus scores of ``hypotheses`` against ``references`` (per sentence:
  a list of references, any number, or one string): ``exact_match`` (a
  fraction: the hypothesis equals one of its references), ``bleu`` (0-100,
  sacrebleu, ``tokenize="zh"``), ``chrf`` (0-100, sacrebleu's chrF2
  defaults) and the two metrics' sacrebleu signature strings."""
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses, {len(references)} "
                     "references")
  if not hypotheses:
    raise ValueError("no hypotheses to score")
  refs = _reference_lists(references)
  streams = reference_streams(refs)
  bleu, chrf = BLEU(tokenize=BLEU_TOKENIZE), CHRF()
  bleu_score = bleu.corpus_score(list(hypotheses), streams).score
  chrf_score = chrf.corpus_score(list(hypotheses), streams).score
  exact = [h in r for h, r in zip(hypotheses, refs)]
  return {"exact_match": float(np.mean(exact)), "bleu": float(bleu_score),
          "chrf": float(chrf_score),
          "bleu_signature": str(bleu.get_signature()),
          "chrf_signature": str(chrf.get_signature())}


def score_views(hypotheses: list[str],
                references: Sequence[Union[str, Sequence[str]]],
                views: Optional[dict[str, Callable[[str], str]]] = None
                ) -> dict:
  """``score``, and for each ``views`` entry (say ``{"simplified": f}``) the
  scores of hypotheses and references both mapped by ``f``, under the keys
  suffixed ``_<view>`` (no signatures: the same as the raw ones')."""
  references = _reference_lists(references)
  scores = score(hypotheses, references)
  for view, convert in (views or {}).items():
    mapped = score([convert(h) for h in hypotheses],
                   [[convert(r) for r in refs] for refs in references])
    scores.update({f"{k}_{view}": v for k, v in mapped.items()
                   if k not in SIGNATURE_KEYS})
  return scores


class HeldOutLoss:
  """An epoch-end evaluation (``Setup.epoch_end``): the token-weighted
  held-out loss and metrics of ``arrays`` (``evaluate_loss``) and, given a
  ``decoder`` and a ``held_out`` set, its greedy decoding's chrF and BLEU
  (``score``), printed and logged as ``<name>_<metric>`` (``name``: the
  held-out set's, else ``val``); each epoch's seconds and the seconds spent
  here are kept (``epoch_seconds``, ``eval_seconds``)."""

  def __init__(self, eval_step, arrays: dict, batch_size: int, epochs: int,
               *, name: str = "val", decoder=None,
               held_out: Optional[HeldOut] = None,
               tgt_vocab: Optional[Vocab] = None):
    if decoder is not None and (held_out is None or tgt_vocab is None):
      raise ValueError("decoding each epoch needs held_out and tgt_vocab")
    self.eval_step, self.arrays = eval_step, arrays
    self.batch_size, self.epochs = batch_size, epochs
    self.name = held_out.name if held_out is not None else name
    self.decoder, self.held_out, self.tgt_vocab = decoder, held_out, tgt_vocab
    self.epoch_seconds, self.eval_seconds = [], 0.0
    self.t = time.perf_counter()

  def __call__(self, state, epoch: int) -> dict:
    return self.epoch_end(state, epoch)

  def compile_ahead(self, params) -> None:
    """Queues the evaluation's programs for compiling in the background
    (their shapes are fixed: ``batch_size`` rows), so the first epoch end
    does not wait for them."""
    from seqjax.training import programs
    if hasattr(self.eval_step, "lower"):
      programs.compile_ahead(self.eval_step, params,
                             _batch_of(self.arrays, self.batch_size))
    if getattr(self.decoder, "in_flight", False):  # the whole set, queued
      arrays = self.held_out.decode_arrays
      for fn, (src, mask, *rest), _ in decoding.queue_programs(
          self.decoder, arrays["src"], self.batch_size, arrays["src_mask"]):
        programs.compile_ahead(fn, params, src, mask, None, *rest)
    elif self.decoder is not None and hasattr(self.decoder, "lower"):
      arrays = _batch_of(self.held_out.decode_arrays, self.batch_size)
      programs.compile_ahead(self.decoder, params, arrays["src"],
                             arrays["src_mask"], None)

  def loss(self, params) -> dict:
    return evaluate_loss(self.eval_step, params, self.arrays, self.batch_size)

  def decode_scores(self, params) -> dict:
    """chrF and BLEU of the held-out set's greedy decoding ({} without a
    decoder)."""
    if self.decoder is None:
      return {}
    hypotheses = decode_texts(self.decoder, params, self.tgt_vocab,
                              self.held_out.decode_arrays, self.batch_size)
    scores = score(hypotheses, self.held_out.references)
    return {"chrf": scores["chrf"], "bleu": scores["bleu"]}

  def epoch_end(self, state, epoch: int) -> dict:
    t0 = time.perf_counter()
    self.epoch_seconds.append(t0 - self.t)
    row = {**self.loss(state.params), **self.decode_scores(state.params)}
    shown = " ".join(f"{self.name}_{k} {v:.4f}" if k in ("loss",
                                                        "token_accuracy")
                     else f"{self.name}_{k} {v:.2f}" for k, v in row.items())
    print(f"Epoch {epoch}/{self.epochs}: {self.epoch_seconds[-1]:.1f}s "
          f"{shown}", flush=True)
    self.t = time.perf_counter()
    self.eval_seconds += self.t - t0
    return {f"{self.name}_{name}": value for name, value in row.items()}
