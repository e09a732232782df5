"""The startup workload's PyTorch peer: a fresh process that imports torch,
builds the attention model (``benchmarks.attention_torch``) and runs one
Adam step, then prints one JSON line of absolute ``time.time()`` stamps
(the parent subtracts its own clock at ``Popen``).

  python -m benchmarks.startup_torch --src_vocab=N --tgt_vocab=N

The batch is random ids of the attention run's shapes (batch 64, source 10,
target 12 tokens by default): no data loading, so its first step is a
floor for what a PyTorch user waits for. JAX is kept out of the process:
``benchmarks.attention`` (which imports seqjax and JAX) is replaced by the
one function the model needs.
"""

import time

T_START = time.time()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import dataclasses
import json
import sys
import types

import torch

T_IMPORTED = time.time()


@dataclasses.dataclass
class _ModelSettings:
  """configs/translate_attention_word.flags' model, as
  ``benchmarks.attention.Settings`` names it."""
  cell: str = "lstm"
  units: int = 256
  embedding_dim: int = 128
  bidirectional: bool = True
  attention: str = "luong"
  attention_score: str = "general"
  input_feeding: bool = True
  dropout: float = 0.2
  label_smoothing: float = 0.1
  learning_rate: float = 2e-3


def _model_module():
  """``benchmarks.attention_torch`` without importing JAX."""
  stub = types.ModuleType("benchmarks.attention")
  stub.memory_features = lambda s: s.units * (2 if s.bidirectional else 1)
  sys.modules.setdefault("benchmarks.attention", stub)
  from benchmarks import attention_torch
  return attention_torch


def _batch(args, rng: torch.Generator) -> dict:
  b, s, t = args.batch_size, args.src_len, args.tgt_len
  src_BS = torch.randint(1, args.src_vocab, (b, s), generator=rng)
  dec_in_BT = torch.randint(1, args.tgt_vocab, (b, t), generator=rng)
  return {"src": src_BS, "dec_in": dec_in_BT, "target": dec_in_BT.roll(-1, 1),
          "src_mask": torch.ones(b, s, dtype=torch.bool),
          "target_mask": torch.ones(b, t, dtype=torch.bool),
          "lengths": torch.full((b,), s, dtype=torch.long)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser()
  for name, default in (("src_vocab", 3000), ("tgt_vocab", 2500),
                        ("batch_size", 64), ("src_len", 10), ("tgt_len", 12),
                        ("seed", 0)):
    p.add_argument(f"--{name}", type=int, default=default)
  args = p.parse_args(argv)
  attention_torch = _model_module()
  s = _ModelSettings()
  torch.manual_seed(args.seed)
  model = attention_torch.AttentionSeq2Seq(args.src_vocab, args.tgt_vocab, s)
  opt = torch.optim.Adam(model.parameters(), lr=s.learning_rate, eps=1e-7)
  model.train()
  batch = _batch(args, torch.Generator().manual_seed(args.seed))
  t_built = time.time()
  opt.zero_grad(set_to_none=True)
  loss = attention_torch.loss_of(model, batch, s.label_smoothing)
  loss.backward()
  opt.step()
  loss = float(loss.detach())
  t_step = time.time()
  print(json.dumps({"t_start": T_START, "t_imported": T_IMPORTED,
                    "t_built": t_built, "t_first_step": t_step, "loss": loss,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "shapes": vars(args)}))


if __name__ == "__main__":
  main()
