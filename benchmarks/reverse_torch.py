"""The reverse workload in plain PyTorch: the tutorial's model with
``nn.LSTM``.

Encoder ``nn.LSTM`` on one-hot inputs, its final (h, c) starts the decoder
``nn.LSTM``, ``nn.Linear`` readout, cross-entropy (softmax inside), Adam with
Keras' epsilon; a plain eager training loop over shuffled batches. Note that
``nn.LSTM`` has two bias vectors per layer (512 more parameters each).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks import harness


class Seq2Seq(nn.Module):

  def __init__(self, n_input: int, n_output: int, units: int):
    super().__init__()
    self.encoder = nn.LSTM(n_input, units, batch_first=True)
    self.decoder = nn.LSTM(n_output, units, batch_first=True)
    self.readout = nn.Linear(units, n_output)

  def forward(self, x1, x2):
    _, state = self.encoder(x1)
    out, _ = self.decoder(x2, state)
    return self.readout(out)


def torch_matmul_gflops(n: int, reps: int = 3) -> float:
  a = torch.randn(n, n)
  a @ a
  best = min(harness.timed(lambda: a @ a)[0] for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


class Runner:

  def __init__(self, workload):
    self.w = workload
    s = workload.s
    self.eye = torch.eye(s.n_features)
    d = workload.train_data
    self.x1 = self.eye[torch.from_numpy(d["src"]).long()]
    self.x2 = self.eye[torch.from_numpy(d["dec_in"]).long()]
    self.y = torch.from_numpy(d["target"]).long()
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    self._build(0)
    self.notes = [f"eager PyTorch ({self.threads} threads, as seqjax; "
                  f"{torch.get_num_interop_threads()} inter-op): nothing is "
                  "compiled, so train_compiles is 0"]

  def _build(self, seed: int):
    torch.manual_seed(seed)
    s = self.w.s
    self.model = Seq2Seq(s.n_features, s.n_features, s.units)
    self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)

  def versions(self) -> dict:
    return {"torch": torch.__version__}

  def _step(self, rows):
    idx = torch.from_numpy(rows)
    self.opt.zero_grad(set_to_none=True)
    logits = self.model(self.x1[idx], self.x2[idx])
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), self.y[idx].reshape(-1))
    loss.backward()
    self.opt.step()
    return loss

  def train_epoch(self, rep: int) -> dict:
    s = self.w.s
    self._build(s.seed + rep)
    self.model.train()
    out = harness.time_eager_epoch(self._step, len(self.y), s.batch_size,
                                   [s.seed, rep])
    acc = self.w.accuracy(self.decode_batched(self.w.decode_sources()))
    return {**out, "decode_accuracy": acc,
            "threads": torch.get_num_threads()}

  @torch.inference_mode()
  def _decode(self, src_onehot):
    self.model.eval()
    _, state = self.model.encoder(src_onehot)
    token = torch.zeros(len(src_onehot), dtype=torch.long)  # start id 0
    out = []
    for _ in range(self.w.s.n_steps_out):
      h, state = self.model.decoder(self.eye[token][:, None], state)
      token = self.model.readout(h[:, 0]).argmax(-1)
      out.append(token)
    return torch.stack(out, 1).numpy()

  def decode_batched(self, src: np.ndarray) -> np.ndarray:
    onehot = self.eye[torch.from_numpy(src).long()]
    bs = self.w.s.decode_batch
    return np.concatenate([self._decode(onehot[i:i + bs])
                           for i in range(0, len(src), bs)])

  def decode_loop(self, src: np.ndarray) -> np.ndarray:
    onehot = self.eye[torch.from_numpy(src).long()]
    return np.concatenate([self._decode(onehot[i:i + 1])
                           for i in range(len(src))])

  def ceiling_gflops(self, n: int) -> float:
    return torch_matmul_gflops(n)
