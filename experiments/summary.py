"""Parameter summary of the tutorial's generic encoder-decoder.

  python -m experiments.summary --input_dim=28 --units=128

prints each layer's parameter count and the total (164,380 for these values,
as Keras reports for its LSTM encoder, LSTM decoder and Dense readout).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqjax import reliability
from seqjax import summary
from seqjax.experiment import field
from seqjax.models import Seq2Seq


@dataclasses.dataclass
class SummaryConfig:
  input_dim: int = field(28, "Input (and output) cardinality.")
  units: int = field(128, "Recurrent units.")
  cell: str = field("lstm", "lstm or gru.")

  def validate(self):
    errors = [f"--{n} must be positive; got {getattr(self, n)}"
              for n in ("input_dim", "units") if getattr(self, n) < 1]
    if self.cell not in ("lstm", "gru"):
      errors.append(f"--cell must be lstm or gru; got {self.cell!r}")
    errors += reliability.range_errors(self, {
        "input_dim": (None, reliability.MAX_VOCAB),
        "units": (None, reliability.MAX_UNITS)})
    return errors


def model_params(config: SummaryConfig):
  model = Seq2Seq(src_vocab=config.input_dim, tgt_vocab=config.input_dim,
                  units=config.units, cell=config.cell)
  tokens = jnp.zeros((1, 1), jnp.int32)
  # eval_shape: the table needs shapes only, so nothing is allocated.
  return jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)


def run(config: SummaryConfig) -> int:
  params = model_params(config)
  print(summary.format_summary(
      params, title=f"encoder_decoder ({config.cell}, input_dim "
      f"{config.input_dim}, units {config.units})"))
  return summary.count_params(params)


if __name__ == "__main__":
  from experiments import common
  common.main(SummaryConfig, run)
