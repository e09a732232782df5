"""Parameter summary of the tutorial's generic encoder-decoder.

  python -m experiments.summary --input_dim=28 --units=128

prints each layer's parameter count and the total (164,380 for these values,
as Keras reports for its LSTM encoder, LSTM decoder and Dense readout).
``--model=repeat_vector`` shows the RepeatVector encoder-decoder instead
(215,580 for these values: its decoder reads the 128-wide repeated vector).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from seqjax import config as config_lib
from seqjax import limits
from seqjax import models
from seqjax import summary
from seqjax.config import field


@dataclasses.dataclass
class SummaryConfig(config_lib.Config):
  input_dim: int = field(28, "Input (and output) cardinality.", low=1,
                         high=limits.MAX_VOCAB)
  units: int = field(128, "Recurrent units.", low=1, high=limits.MAX_UNITS)
  cell: str = field("lstm", "lstm or gru.", choices=config_lib.CELLS)
  model: str = field("encoder_decoder", "encoder_decoder or repeat_vector.",
                     choices=models.MODEL_CHOICES)


def model_params(config: SummaryConfig):
  # The output length does not change the parameters of either model.
  model = models.build_seq2seq(
      config.model, src_vocab=config.input_dim, tgt_vocab=config.input_dim,
      units=config.units, out_len=1, cell=config.cell)
  tokens = jnp.zeros((1, 1), jnp.int32)
  # eval_shape: the table needs shapes only, so nothing is allocated.
  return jax.eval_shape(functools.partial(models.init_params, model),
                        jax.random.key(0), tokens, tokens)


def run(config: SummaryConfig) -> int:
  params = model_params(config)
  print(summary.format_summary(
      params, title=f"{config.model} ({config.cell}, input_dim "
      f"{config.input_dim}, units {config.units})"))
  return summary.count_params(params)


class SummaryBinary:
  """Not a training task: a config and a run, for ``common.main``."""
  name, config_cls, run = "summary", SummaryConfig, staticmethod(run)


if __name__ == "__main__":
  from experiments import common
  common.main(SummaryBinary)
