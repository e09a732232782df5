"""The attention workload in plain PyTorch: the same model, written as a
PyTorch user (or an NMT toolkit's recurrent model) writes it.

``nn.Embedding`` -> dropout -> ``nn.LSTM`` encoder (bidirectional: the
packed sequence of ``pack_padded_sequence``, so the backward direction
starts at each sentence's last real token); a bridge ``tanh(nn.Linear)`` of
[forward final; backward final] for h and for c; the memory's key projection
``W_a m`` once per batch; an ``nn.LSTMCell`` decoder stepped in a Python
loop, its input [target embedding; previous attentional state] (input
feeding), Luong's score ``h . (W_a m)`` under a masked softmax, the
attentional state ``tanh(W_c [context; h])`` (dropout on it), one
``nn.Linear`` readout over all steps, cross-entropy with label smoothing over
the real target positions; Adam with seqjax's epsilon (1e-7). The other
settings (GRU, unidirectional, no attention, Bahdanau, no feeding: one
``nn.LSTM`` call over all target steps, attention over all of them at once)
follow ``seqjax.models.Seq2Seq`` in the same way.

Batches are the workload's: the same bucketed id arrays, in the same order,
as seqjax trains on. ``nn.LSTM`` keeps two bias vectors per recurrence, so
the model has ``attention.extra_torch_parameters`` more parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import rnn as rnn_utils

from benchmarks import harness
from benchmarks.attention import memory_features
from benchmarks.reverse_torch import torch_matmul_gflops

RECURRENT = {"lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell)}


class AttentionSeq2Seq(nn.Module):
  """``seqjax.models.Seq2Seq`` (one layer each side) in PyTorch."""

  def __init__(self, src_vocab: int, tgt_vocab: int, s):
    super().__init__()
    e, h, m = s.embedding_dim, s.units, memory_features(s)
    layer, cell = RECURRENT[s.cell]
    self.s, self.lstm = s, s.cell == "lstm"
    self.feeds = s.attention == "luong" and s.input_feeding
    self.stepwise = s.attention == "bahdanau" or self.feeds
    self.src_embed = nn.Embedding(src_vocab, e)
    self.tgt_embed = nn.Embedding(tgt_vocab, e)
    self.drop = nn.Dropout(s.dropout)
    self.encoder = layer(e, h, batch_first=True,
                         bidirectional=s.bidirectional)
    # One bridge per carry part (LSTM: h and c).
    self.bridges = nn.ModuleList(
        [nn.Linear(m, h) for _ in range(2 if self.lstm else 1)]
    ) if s.bidirectional else None
    extra = m if s.attention == "bahdanau" else (h if self.feeds else 0)
    self.decoder = (cell(e + extra, h) if self.stepwise
                    else layer(e, h, batch_first=True))
    if s.attention != "none":
      dot = s.attention == "luong" and s.attention_score == "dot"
      self.key = None if dot else nn.Linear(m, h, bias=False)
      if s.attention == "bahdanau":
        self.query = nn.Linear(h, h, bias=False)
        self.v = nn.Parameter(torch.randn(h) * h ** -0.5)
      self.combine = nn.Linear(m + h, h, bias=False)
    self.readout = nn.Linear(h, tgt_vocab)

  def encode(self, src_BS, lengths_B):
    """-> memory (B, S, M), the decoder's start carry (a tuple of (B, H))."""
    x_BSE = self.drop(self.src_embed(src_BS))
    packed = rnn_utils.pack_padded_sequence(x_BSE, lengths_B,
                                            batch_first=True,
                                            enforce_sorted=False)
    out, final = self.encoder(packed)
    memory_BSM, _ = rnn_utils.pad_packed_sequence(
        out, batch_first=True, total_length=src_BS.shape[1])
    finals = final if self.lstm else (final,)  # each (directions, B, H)
    if self.bridges is None:
      return memory_BSM, tuple(f[0] for f in finals)
    return memory_BSM, tuple(
        torch.tanh(bridge(torch.cat([f[0], f[1]], dim=-1)))
        for bridge, f in zip(self.bridges, finals))

  def _scores(self, query_BXH, keys_BSA):
    """Scores (B, X, S) of queries (B, X, H)."""
    if self.s.attention == "luong":
      return torch.bmm(query_BXH, keys_BSA.transpose(1, 2))
    q_BXA = self.query(query_BXH)
    return torch.tanh(q_BXA[:, :, None] + keys_BSA[:, None]) @ self.v

  def _context(self, query_BXH, memory_BSM, keys_BSA, mask_BS):
    scores_BXS = self._scores(query_BXH, keys_BSA).masked_fill(
        ~mask_BS[:, None], float("-inf"))
    return torch.bmm(torch.softmax(scores_BXS, dim=-1), memory_BSM)

  def _attentional(self, h_BXH, memory_BSM, keys_BSA, mask_BS):
    context_BXM = self._context(h_BXH, memory_BSM, keys_BSA, mask_BS)
    return torch.tanh(self.combine(torch.cat([context_BXM, h_BXH], -1)))

  def _readout_state(self, extra_BM, h_BH, memory_BSM, keys_BSA, mask_BS):
    """A stepwise decoder's attentional state: Bahdanau reads out from the
    context it fed into the step (as in the paper), Luong attends from the
    new state."""
    if self.s.attention == "bahdanau":
      return torch.tanh(self.combine(torch.cat([extra_BM, h_BH], -1)))
    return self._attentional(h_BH[:, None], memory_BSM, keys_BSA,
                             mask_BS)[:, 0]

  def forward(self, src_BS, lengths_B, src_mask_BS, dec_in_BT):
    """-> logits (B, T, V)."""
    memory_BSM, start = self.encode(src_BS, lengths_B)
    y_BTE = self.drop(self.tgt_embed(dec_in_BT))
    if self.s.attention == "none":
      out_BTH, _ = self.decoder(y_BTE, tuple(c[None] for c in start)
                                if self.lstm else start[0][None])
      return self.readout(self.drop(out_BTH))
    keys_BSA = memory_BSM if self.key is None else self.key(memory_BSM)
    if not self.stepwise:  # Luong without feeding: all steps at once
      out_BTH, _ = self.decoder(y_BTE, tuple(c[None] for c in start)
                                if self.lstm else start[0][None])
      return self.readout(self.drop(self._attentional(
          out_BTH, memory_BSM, keys_BSA, src_mask_BS)))
    carry = start if self.lstm else start[0]
    feed_BH = y_BTE.new_zeros(y_BTE.shape[0], self.s.units)
    states = []
    for t in range(y_BTE.shape[1]):
      if self.s.attention == "bahdanau":  # attends with the previous state
        h_prev = carry[0] if self.lstm else carry
        extra = self._context(h_prev[:, None], memory_BSM, keys_BSA,
                              src_mask_BS)[:, 0]
      else:
        extra = feed_BH
      carry = self.decoder(torch.cat([y_BTE[:, t], extra], -1), carry)
      h_BH = carry[0] if self.lstm else carry
      att_BH = self.drop(self._readout_state(extra, h_BH, memory_BSM,
                                             keys_BSA, src_mask_BS))
      feed_BH = att_BH
      states.append(att_BH)
    return self.readout(torch.stack(states, 1))

  # ---------------------------------------------------------- inference

  def start_decoding(self, src_BS, lengths_B, src_mask_BS) -> DecodeState:
    """The encoder run once: the first decoder step's state."""
    memory_BSM, start = self.encode(src_BS, lengths_B)
    keys_BSA = None
    if self.s.attention != "none":
      keys_BSA = memory_BSM if self.key is None else self.key(memory_BSM)
    feed_BH = (memory_BSM.new_zeros(src_BS.shape[0], self.s.units)
               if self.feeds else None)
    return DecodeState(start, feed_BH, memory_BSM, keys_BSA, src_mask_BS)

  def decode_step(self, token_B, state: DecodeState):
    """One decoder step of the previous tokens (B,) -> logits (B, V), the
    next state: ``forward``'s loop body (or its one-step call of the
    whole-sequence decoder)."""
    y_BE = self.tgt_embed(token_B)
    memory_BSM, keys_BSA, mask_BS = (state.memory_BSM, state.keys_BSA,
                                     state.mask_BS)
    carry = state.carry
    if not self.stepwise:  # nn.LSTM / nn.GRU, one step
      layer_carry = (tuple(c[None] for c in carry) if self.lstm
                     else carry[0][None])
      out_B1H, layer_carry = self.decoder(y_BE[:, None], layer_carry)
      carry = (tuple(c[0] for c in layer_carry) if self.lstm
               else (layer_carry[0],))
      out_BH = out_B1H[:, 0]
      if self.s.attention == "luong":
        out_BH = self._attentional(out_BH[:, None], memory_BSM, keys_BSA,
                                   mask_BS)[:, 0]
      return self.readout(out_BH), DecodeState(carry, None, memory_BSM,
                                               keys_BSA, mask_BS)
    if self.s.attention == "bahdanau":  # attends with the previous state
      extra = self._context(carry[0][:, None], memory_BSM, keys_BSA,
                            mask_BS)[:, 0]
    else:
      extra = state.feed_BH
    new = self.decoder(torch.cat([y_BE, extra], -1),
                       carry if self.lstm else carry[0])
    carry = new if self.lstm else (new,)
    att_BH = self._readout_state(extra, carry[0], memory_BSM, keys_BSA,
                                 mask_BS)
    return self.readout(att_BH), DecodeState(
        carry, att_BH if self.feeds else None, memory_BSM, keys_BSA, mask_BS)


class DecodeState:
  """What a decoder step reads besides the token, one row per hypothesis:
  the carry (a tuple of (B, H)), the fed attentional state (B, H) or None,
  and the source side: memory (B, S, M), its keys (B, S, A), mask (B, S).
  ``select(rows)`` keeps those rows (beam reordering, finished sentences
  dropped), as an NMT toolkit's ``index_select`` of its decoder state."""

  def __init__(self, carry, feed_BH, memory_BSM, keys_BSA, mask_BS):
    self.carry, self.feed_BH = carry, feed_BH
    self.memory_BSM, self.keys_BSA, self.mask_BS = memory_BSM, keys_BSA, mask_BS

  def select(self, rows, source_rows=None) -> "DecodeState":
    """The state of ``rows``; the source side is taken at ``source_rows``
    (None: kept as it is, as when beams are reordered within their
    sentences, which share one source)."""
    take = lambda x, at: None if x is None else x.index_select(0, at)
    memory, keys, mask = self.memory_BSM, self.keys_BSA, self.mask_BS
    if source_rows is not None:
      memory, keys, mask = (take(x, source_rows) for x in (memory, keys,
                                                           mask))
    return DecodeState(tuple(take(c, rows) for c in self.carry),
                       take(self.feed_BH, rows), memory, keys, mask)

  def repeat(self, k: int) -> "DecodeState":
    """Every row k times in a row (row b*k + j: a copy of row b)."""
    rows = torch.arange(self.mask_BS.shape[0]).repeat_interleave(k)
    return self.select(rows, rows)


def _gates_to_torch(cell: str, x_XG: np.ndarray) -> np.ndarray:
  """seqjax's gate columns in PyTorch's row order, transposed: LSTM i, f,
  g, o in both; GRU z, r, n -> r, z, n."""
  if cell == "gru":
    z, r, n = np.split(x_XG, 3, axis=-1)
    x_XG = np.concatenate([r, z, n], axis=-1)
  return x_XG.T


def _copy_recurrence(cell: str, p: dict, weights: dict) -> None:
  """One seqjax recurrence's parameters into PyTorch's ``weight_ih``,
  ``weight_hh``, ``bias_ih``, ``bias_hh`` (their names' suffix aside)."""
  bias = np.asarray(p["bias"])
  b_ih, b_hh = (bias, np.zeros_like(bias)) if cell == "lstm" else bias
  for name, value in (("weight_ih", p["kernel"]),
                      ("weight_hh", p["recurrent_kernel"]),
                      ("bias_ih", b_ih), ("bias_hh", b_hh)):
    weights[name] = _gates_to_torch(cell, np.asarray(value))


def copy_seqjax_params(model: AttentionSeq2Seq, params) -> None:
  """Sets ``model``'s parameters to a seqjax ``Seq2Seq``'s (the same
  settings): the check that the two compute the same function. seqjax's
  one LSTM bias goes to ``bias_ih``; ``bias_hh`` is zeroed."""
  p, cell = params["params"], model.s.cell
  state = {"src_embed.weight": p["src_embedding"]["embedding"],
           "tgt_embed.weight": p["tgt_embedding"]["embedding"],
           "readout.weight": np.asarray(p["readout"]["kernel"]).T,
           "readout.bias": p["readout"]["bias"]}
  for name, suffix in (("encoder", "_l0"), ("encoder_backward",
                                           "_l0_reverse")):
    if name in p:
      weights = {}
      _copy_recurrence(cell, p[name], weights)
      state.update({f"encoder.{k}{suffix}": v for k, v in weights.items()})
  weights = {}
  _copy_recurrence(cell, p["decoder"], weights)
  suffix = "" if model.stepwise else "_l0"
  state.update({f"decoder.{k}{suffix}": v for k, v in weights.items()})
  for k in range(len(model.bridges or ())):
    state[f"bridges.{k}.weight"] = np.asarray(p[f"bridge_{k}"]["kernel"]).T
    state[f"bridges.{k}.bias"] = p[f"bridge_{k}"]["bias"]
  if model.s.attention != "none":
    att = p.get("attention", {})  # none for a dot score
    if model.key is not None:
      state["key.weight"] = np.asarray(att["key_kernel"]).T
    if model.s.attention == "bahdanau":
      state["query.weight"] = np.asarray(att["query_kernel"]).T
      state["v"] = att["v"]
    state["combine.weight"] = np.asarray(p["combine"]).T
  model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                         for k, v in state.items()}, strict=True)


def to_torch(bucket: dict) -> dict:
  """A bucket's id arrays as tensors, with the source lengths (CPU int64,
  as ``pack_padded_sequence`` wants them)."""
  out = {k: torch.from_numpy(np.asarray(v)) for k, v in bucket.items()}
  for k in ("src", "dec_in", "target"):
    out[k] = out[k].long()
  out["src_mask"] = out["src_mask"].bool()
  out["target_mask"] = out["target_mask"].bool()
  out["lengths"] = out["src_mask"].sum(-1)
  return out


def loss_of(model, batch: dict, label_smoothing: float):
  """Cross-entropy (label-smoothed) over the real target positions."""
  logits_BTV = model(batch["src"], batch["lengths"], batch["src_mask"],
                     batch["dec_in"])
  mask_BT = batch["target_mask"]
  return nn.functional.cross_entropy(logits_BTV[mask_BT],
                                     batch["target"][mask_BT],
                                     label_smoothing=label_smoothing)


class Runner:

  def __init__(self, workload):
    self.w = w = workload
    self.buckets = [to_torch(b) for b in w.buckets]
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    self._build(w.s.seed)
    first = to_torch(w.first_batch())
    self.model.train()  # dropout on, as in the first step
    with torch.no_grad():
      loss = loss_of(self.model, first, w.s.label_smoothing)
    self.checks = {"parameters": sum(p.numel()
                                     for p in self.model.parameters()),
                   "init_loss": float(loss)}
    self.notes = [f"eager PyTorch ({self.threads} threads, as seqjax; "
                  f"{torch.get_num_interop_threads()} inter-op): nothing is "
                  "compiled, so train_compiles is 0; the same batches as "
                  "seqjax, in the same order"]

  def _build(self, seed: int):
    torch.manual_seed(seed)
    w = self.w
    self.model = AttentionSeq2Seq(len(w.src_vocab), len(w.tgt_vocab), w.s)
    self.opt = torch.optim.Adam(self.model.parameters(),
                                lr=w.s.learning_rate, eps=1e-7)

  def versions(self) -> dict:
    return {"torch": torch.__version__}

  def _batch(self, dataset: int, rows_B: np.ndarray) -> dict:
    idx = torch.from_numpy(rows_B.astype(np.int64))
    return {k: v[idx] for k, v in self.buckets[dataset].items()}

  def _step(self, batch: dict):
    self.opt.zero_grad(set_to_none=True)
    loss = loss_of(self.model, batch, self.w.s.label_smoothing)
    loss.backward()
    self.opt.step()
    return loss.detach()

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    self._build(s.seed + rep)
    self.model.train()
    dataset_S, rows_SB = self.w.epoch_order(rep)
    batches = [(int(d), r) for d, r in zip(dataset_S, rows_SB)]
    # Picking a batch's rows is data loading: not timed (seqjax gathers its
    # rows inside the jitted step, so its time includes it).
    first, first_loss = harness.timed(lambda: self._step(
        self._batch(*batches[0])).item())
    prepared = [self._batch(*b) for b in batches[1:]]

    def rest():
      losses = [self._step(b) for b in prepared]
      return torch.stack(losses).tolist() if losses else []
    secs, losses = harness.timed(rest)
    return {"first_step_s": first, "train_seconds": secs,
            "train_samples": len(prepared) * s.batch_size,
            "train_compiles": 0, "threads": torch.get_num_threads(),
            # The epoch's mean training loss, as fit's epoch-end row.
            "train_loss": float(np.mean([first_loss] + losses))}

  def ceiling_gflops(self, n: int) -> float:
    return torch_matmul_gflops(n)
