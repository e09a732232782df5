"""The translate workload in plain PyTorch: the ``lstm_seq2seq`` example's
model with ``nn.LSTM``.

As the Keras example: one-hot inputs (looked up per batch from an identity
matrix), every sentence padded with spaces to the longest and trained on its
padding, encoder ``nn.LSTM`` whose final (h, c) starts the decoder
``nn.LSTM``, ``nn.Linear`` readout, cross-entropy over every position,
RMSprop with Keras' rho 0.9 and epsilon 1e-7; a plain eager loop over
shuffled batches. Greedy decoding feeds back the argmax one-hot; with
``decode_early_stop`` it stops a batch when every sentence has emitted
``\\n``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks import harness
from benchmarks.peers import keras_translate as kt
from benchmarks.reverse_torch import Seq2Seq, torch_matmul_gflops


class Runner:

  def __init__(self, workload):
    self.w = workload
    self.tables = kt.char_tables(workload.all_pairs, workload.all_pairs)
    self.eye_in = torch.eye(len(self.tables.input_chars))
    self.eye_out = torch.eye(len(self.tables.target_chars))
    pairs = workload.train_pairs
    self.src = torch.from_numpy(kt.input_ids(self.tables,
                                             [s for s, _ in pairs]))
    dec_in, target = kt.target_ids(self.tables, [t for _, t in pairs])
    self.dec_in, self.target = torch.from_numpy(dec_in), torch.from_numpy(
        target)
    self.start = self.tables.target_index[kt.START]
    self.end = self.tables.target_index[kt.END]
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    self._build(0)
    self.notes = [f"eager PyTorch ({self.threads} threads, as seqjax; "
                  f"{torch.get_num_interop_threads()} inter-op): nothing is "
                  "compiled, so train_compiles is 0"]

  def _build(self, seed: int):
    torch.manual_seed(seed)
    self.model = Seq2Seq(len(self.tables.input_chars),
                         len(self.tables.target_chars), self.w.s.latent_dim)
    self.opt = torch.optim.RMSprop(self.model.parameters(), lr=1e-3,
                                   alpha=0.9, eps=1e-7)

  def versions(self) -> dict:
    return {"torch": torch.__version__}

  def _step(self, rows):
    idx = torch.from_numpy(rows)
    self.opt.zero_grad(set_to_none=True)
    logits = self.model(self.eye_in[self.src[idx]],
                        self.eye_out[self.dec_in[idx]])
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), self.target[idx].reshape(-1))
    loss.backward()
    self.opt.step()
    return loss

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    self._build(s.seed + rep)
    self.model.train()
    out = harness.time_eager_epoch(self._step, len(self.src), s.batch_size,
                                   [s.seed, rep])
    texts = self.decode_batched(self.w.decode_sources())
    return {**out, **self.w.decode_quality(texts),
            "threads": torch.get_num_threads()}

  @torch.inference_mode()
  def _decode(self, src_ids) -> list[str]:
    self.model.eval()
    _, state = self.model.encoder(self.eye_in[src_ids])
    n = len(src_ids)
    token = torch.full((n,), self.start, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    out = []
    for _ in range(self.w.max_decode_len):
      h, state = self.model.decoder(self.eye_out[token][:, None], state)
      token = self.model.readout(h[:, 0]).argmax(-1)
      out.append(token)
      done |= token == self.end
      if self.w.s.decode_early_stop and bool(done.all()):
        break
    chars = self.tables.target_chars
    texts = []
    for row in torch.stack(out, 1).tolist():
      text = []
      for k in row:
        if k == self.end:
          break
        text.append(chars[k])
      texts.append("".join(text))
    return texts

  def _ids(self, src):
    return torch.from_numpy(kt.input_ids(self.tables, list(src)))

  def decode_batched(self, src) -> list[str]:
    ids, bs = self._ids(src), self.w.s.decode_batch
    return [t for i in range(0, len(ids), bs)
            for t in self._decode(ids[i:i + bs])]

  def decode_loop(self, src) -> list[str]:
    ids = self._ids(src)
    return [self._decode(ids[i:i + 1])[0] for i in range(len(ids))]

  def ceiling_gflops(self, n: int) -> float:
    return torch_matmul_gflops(n)
