"""Losses and metrics over padded token sequences (0 = padding by default)."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def masked_cross_entropy(logits_BTV: Array, targets_BT: Array,
                         mask_BT: Optional[Array] = None,
                         label_smoothing: float = 0.0) -> Array:
  """Mean cross-entropy over the real (mask True) target steps.

  ``label_smoothing`` e: the target distribution is ``1 - e`` on the target
  and ``e / V`` on every class (Szegedy et al. 2016)."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  if label_smoothing:
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None],
                                  axis=-1)[..., 0]
    losses_BT = (1.0 - label_smoothing) * nll_BT - (
        label_smoothing * logp_BTV.mean(axis=-1))
  else:
    losses_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV, targets_BT)
  if mask_BT is None:
    return losses_BT.mean()
  mask_BT = mask_BT.astype(jnp.float32)
  return (losses_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)


def masked_token_accuracy(pred_BT, targets_BT, mask_BT=None):
  """Fraction of real target steps predicted right (works on jnp or np)."""
  xp = jnp if isinstance(pred_BT, jax.Array) else np
  right = (pred_BT == targets_BT)
  if mask_BT is None:
    return right.mean()
  mask = mask_BT.astype(right.dtype) if xp is np else mask_BT
  return (right & mask).sum() / xp.maximum(mask.sum(), 1)


def exact_sequence_accuracy(pred_BT, targets_BT, mask_BT=None):
  """A sequence counts only if every real target step is right."""
  right = (pred_BT == targets_BT)
  if mask_BT is not None:
    right = right | ~mask_BT.astype(bool)
  return right.all(axis=-1).mean()


# Corpus-level text metrics over characters (host-side, on decoded strings).
# Whitespace is dropped, as in sacreBLEU's "char" tokenizer and chrF.


def _chars(text: str) -> list[str]:
  return [ch for ch in text if not ch.isspace()]


def _ngrams(tokens, n: int) -> dict:
  counts = {}
  for i in range(len(tokens) - n + 1):
    gram = tuple(tokens[i:i + n])
    counts[gram] = counts.get(gram, 0) + 1
  return counts


def corpus_bleu(hypotheses, references, max_order: int = 4,
                smooth: str = "exp") -> float:
  """Corpus BLEU (0-100) over characters, one reference per hypothesis.

  Clipped n-gram matches and lengths are summed over the corpus first
  (Papineni et al.), then the geometric mean of the precisions times the
  brevity penalty. ``smooth="exp"`` (sacreBLEU's default) gives an order with
  no match precision 1 / (2^k * total) for its k-th such order; "none" makes it
  0 (BLEU 0). Matches ``sacrebleu.corpus_bleu(..., tokenize="char")``.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses, {len(references)} "
                     "references")
  if smooth not in ("exp", "none"):
    raise ValueError(f"smooth must be 'exp' or 'none'; got {smooth!r}")
  correct, total = [0] * max_order, [0] * max_order
  hyp_len = ref_len = 0
  for hyp, ref in zip(hypotheses, references):
    h, r = _chars(hyp), _chars(ref)
    hyp_len += len(h)
    ref_len += len(r)
    for n in range(1, max_order + 1):
      h_n, r_n = _ngrams(h, n), _ngrams(r, n)
      correct[n - 1] += sum(min(c, r_n.get(g, 0)) for g, c in h_n.items())
      total[n - 1] += max(len(h) - n + 1, 0)
  if not any(correct):
    return 0.0
  log_sum, halvings = 0.0, 1.0
  for n in range(max_order):
    if total[n] == 0 or (correct[n] == 0 and smooth == "none"):
      return 0.0
    if correct[n] == 0:
      halvings *= 2
      precision = 1.0 / (halvings * total[n])
    else:
      precision = correct[n] / total[n]
    log_sum += math.log(precision)
  bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
  return 100.0 * bp * math.exp(log_sum / max_order)


def corpus_chrf(hypotheses, references, order: int = 6,
                beta: float = 2.0) -> float:
  """Corpus chrF (0-100): character n-gram F-beta (Popovic 2015).

  Matched, hypothesis and reference n-gram counts of each order 1..``order``
  are summed over the corpus (a sentence's hypothesis n-grams count only for
  orders its reference has); precision and recall are averaged over the
  orders that occur in both, then combined into F-beta (recall weighted
  ``beta`` times). Matches ``sacrebleu.corpus_chrf`` (chrF2).
  """
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses, {len(references)} "
                     "references")
  match, hyp_total, ref_total = [0] * order, [0] * order, [0] * order
  for hyp, ref in zip(hypotheses, references):
    h, r = _chars(hyp), _chars(ref)
    for n in range(1, order + 1):
      h_n, r_n = _ngrams(h, n), _ngrams(r, n)
      match[n - 1] += sum(min(c, r_n.get(g, 0)) for g, c in h_n.items())
      # As sacreBLEU: a reference too short for order n has nothing to miss.
      hyp_total[n - 1] += sum(h_n.values()) if r_n else 0
      ref_total[n - 1] += sum(r_n.values())
  precisions, recalls = [], []
  for n in range(order):
    if hyp_total[n] and ref_total[n]:
      precisions.append(match[n] / hyp_total[n])
      recalls.append(match[n] / ref_total[n])
  if not precisions:
    return 0.0
  p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
  if p + r == 0:
    return 0.0
  b2 = beta ** 2
  return 100.0 * (1 + b2) * p * r / (b2 * p + r)
