"""The decode workload's PyTorch peer: greedy and batched beam search of the
attention model (``benchmarks.attention_torch.AttentionSeq2Seq``, its
weights copied from seqjax), written as a PyTorch NMT toolkit writes them.

The encoder runs once per batch (``pack_padded_sequence``, the batch cut to
its widest source), then a Python loop over decoder steps under
``torch.inference_mode``:

* greedy: the argmax token of every sentence; a sentence that emits the
  end symbol is dropped from the batch (``index_select`` of the decoder
  state and of its source side), the loop ends when none is left or at
  ``max_len``;
* beam search: the K beams of a sentence are K rows of the batch (row
  b*K + j); each step adds the log-softmax to the beams' sums, takes the 2K
  best of beam x vocabulary (``topk`` of (B, K*V)), reorders the decoder
  state by the beam each candidate came from (``index_select``: carry and
  input feed; the source side is shared by a sentence's beams), and keeps
  finished hypotheses apart, as ``seqjax.decoding.beam`` does: only an end among
  the K best candidates finishes (scored ``log P / ((5 + len) / 6) **
  alpha``, GNMT's penalty), the K best finished are kept, the K best
  candidates that did not end live on. A sentence is dropped from the batch
  once its best live hypothesis can no longer beat its best finished one
  (``seqjax.decoding.beam``'s bound for one returned hypothesis: ``live /
  penalty(max_len)``); the loop ends
  when none is left or at ``max_len``.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import attention as attention_bench
from benchmarks import attention_torch
from benchmarks import harness
from benchmarks.decode import PAD, START, STOP

NEG_INF = float("-inf")


def penalty(length, alpha: float) -> float:
  return ((5.0 + length) / 6.0) ** alpha


@torch.inference_mode()
def greedy(model, src_BS, lengths_B, mask_BS, max_len: int, stop=STOP):
  """-> tokens (B, max_len) (the end symbol emitted, then padding), steps,
  rows stepped; ``stop`` None: every sentence runs ``max_len`` steps."""
  batch = src_BS.shape[0]
  state = model.start_decoding(src_BS, lengths_B, mask_BS)
  out_BT = torch.full((batch, max_len), PAD, dtype=torch.long)
  active_A = torch.arange(batch)  # the sentence of each row
  token_A = torch.full((batch,), START, dtype=torch.long)
  rows, t = 0, 0
  for t in range(max_len):
    logits_AV, state = model.decode_step(token_A, state)
    rows += len(active_A)
    token_A = logits_AV.argmax(-1)
    out_BT[active_A, t] = token_A
    going_A = token_A != (-1 if stop is None else stop)
    if not bool(going_A.all()):
      keep = going_A.nonzero()[:, 0]
      if not len(keep):
        break
      active_A, token_A = active_A[keep], token_A[keep]
      state = state.select(keep, keep)
  return out_BT, t + 1, rows


@torch.inference_mode()
def beam_search(model, src_BS, lengths_B, mask_BS, *, k: int, max_len: int,
                alpha: float, stop=STOP):
  """-> the best hypothesis' tokens (B, max_len), steps, rows stepped; with
  ``stop`` None hypotheses end at ``max_len`` only."""
  batch = src_BS.shape[0]
  state = model.start_decoding(src_BS, lengths_B, mask_BS).repeat(k)
  out_BT = torch.full((batch, max_len), PAD, dtype=torch.long)
  # Per live sentence (A of them, "active"): its K live and K finished
  # hypotheses.
  active_A = torch.arange(batch)
  alive_logp_AK = torch.full((batch, k), NEG_INF)
  alive_logp_AK[:, 0] = 0.0  # beam 0 is the one real hypothesis at first
  alive_tok_AKT = torch.full((batch, k, max_len), PAD, dtype=torch.long)
  fin_score_AK = torch.full((batch, k), NEG_INF)
  fin_tok_AKT = torch.full((batch, k, max_len), PAD, dtype=torch.long)
  last_X = torch.full((batch * k,), START, dtype=torch.long)
  first_k = torch.arange(2 * k) < k
  bound = penalty(max_len, alpha)
  rows, t = 0, 0
  for t in range(max_len):
    n = len(active_A)
    logits_XV, state = model.decode_step(last_X, state)
    rows += n * k
    vocab = logits_XV.shape[-1]
    logp_AKV = torch.log_softmax(logits_XV.float(), -1).view(n, k, vocab)
    cand_AX = (alive_logp_AK[:, :, None] + logp_AKV).view(n, k * vocab)
    logp_AC, index_AC = cand_AX.topk(2 * k, dim=1)
    origin_AC, token_AC = index_AC // vocab, index_AC % vocab
    tok_ACT = alive_tok_AKT.gather(
        1, origin_AC[:, :, None].expand(-1, -1, max_len)).clone()
    tok_ACT[:, :, t] = token_AC
    ends_AC = (token_AC == (-1 if stop is None else stop)) | (
        t == max_len - 1)
    # The finished: the K best of those kept and those ending among the K
    # best candidates.
    new_AC = torch.where(ends_AC & first_k, logp_AC / penalty(t + 1, alpha),
                         NEG_INF)
    fin_score_AK, pick_AK = torch.cat([fin_score_AK, new_AC], 1).topk(k, 1)
    fin_tok_AKT = torch.cat([fin_tok_AKT, tok_ACT], 1).gather(
        1, pick_AK[:, :, None].expand(-1, -1, max_len))
    # The live: the K best candidates that did not end.
    alive_logp_AK, live_AK = logp_AC.masked_fill(ends_AC, NEG_INF).topk(k, 1)
    alive_tok_AKT = tok_ACT.gather(
        1, live_AK[:, :, None].expand(-1, -1, max_len))
    last_X = token_AC.gather(1, live_AK).view(-1)
    beam_rows_AK = (torch.arange(n)[:, None] * k
                    + origin_AC.gather(1, live_AK))
    going_A = alive_logp_AK[:, 0] / bound > fin_score_AK[:, 0]
    if bool(going_A.all()):
      state = state.select(beam_rows_AK.view(-1))
      continue
    done = (~going_A).nonzero()[:, 0]
    out_BT[active_A[done]] = fin_tok_AKT[done, 0]
    keep = going_A.nonzero()[:, 0]
    if not len(keep):
      break
    active_A = active_A[keep]
    alive_logp_AK, fin_score_AK = alive_logp_AK[keep], fin_score_AK[keep]
    alive_tok_AKT, fin_tok_AKT = alive_tok_AKT[keep], fin_tok_AKT[keep]
    last_X = last_X.view(n, k)[keep].view(-1)
    source_rows = (keep[:, None] * k + torch.arange(k)).view(-1)
    state = state.select(beam_rows_AK[keep].view(-1), source_rows)
  return out_BT, t + 1, rows


class Runner:
  """PyTorch's two decoders of the workload's model (its seqjax weights)."""

  framework = "torch"

  def __init__(self, workload):
    self.w = w = workload
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    arch = attention_bench.Settings(**w.arch, dropout=0.0)
    self.model = attention_torch.AttentionSeq2Seq(w.src_vocab, w.tgt_vocab,
                                                  arch)
    attention_torch.copy_seqjax_params(self.model, w.params)
    self.model.eval()
    s = w.s
    self.fns = {
        "greedy": lambda *a: greedy(self.model, *a, max_len=w.max_len,
                                    stop=w.stop_id),
        f"beam{s.beam_size}": lambda *a: beam_search(
            self.model, *a, k=s.beam_size, max_len=w.max_len,
            alpha=s.length_penalty, stop=w.stop_id)}
    self.notes = [f"eager PyTorch ({self.threads} threads, as seqjax; "
                  f"{torch.get_num_interop_threads()} inter-op) under "
                  "inference_mode; each batch cut to its widest source; a "
                  "sentence leaves the batch when its search is over"]

  def versions(self) -> dict:
    return {"torch": torch.__version__}

  def model_info(self) -> dict:
    return {"parameters": sum(p.numel() for p in self.model.parameters()),
            "class": "benchmarks.attention_torch.AttentionSeq2Seq",
            "sizes": "seqjax's, its weights copied"}

  def _batch(self, start: int, stop: int):
    mask = self.w.mask_NS[start:stop]
    lengths = mask.sum(1)
    width = int(lengths.max())
    src = torch.from_numpy(self.w.src_NS[start:stop, :width].astype(np.int64))
    return src, torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(
        mask[:, :width].copy())

  def decode(self, decoder: str, batch: int):
    """-> tokens (N, max_len), decoder steps (summed over the batches),
    decoder rows stepped (summed)."""
    fn, tokens, steps, rows = self.fns[decoder], [], 0, 0
    for start, stop in self.w.batches(batch):
      out, steps_, rows_ = fn(*self._batch(start, stop))
      tokens.append(out.numpy().astype(np.int32))
      steps, rows = steps + steps_, rows + rows_
    return np.concatenate(tokens), steps, rows

  def first_call(self, decoder: str, batch: int) -> dict:
    """The first call on one batch (eager: nothing compiles)."""
    start, stop = self.w.batches(batch)[0]
    secs, _ = harness.timed(lambda: self.fns[decoder](*self._batch(start,
                                                                   stop)))
    return {"first_call_s": secs, "compiles": 0}
