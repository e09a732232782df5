"""Sort random integers: a new task written against the task contract.

Source: ``length`` random integers in 1..n_values-1; target: the same sorted.
A teacher-forced encoder-decoder, evaluated by batched greedy decoding on
fresh sequences. Everything else (flags, checks, workdir, resume, logging,
checkpoints, results.json) comes from ``seqjax.runner``.

  python -m experiments.sort [--length=8 --epochs=3 --workdir=...]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from seqjax import config as config_lib
from seqjax import decoding, metrics, models, task, train
from seqjax.config import field

START_ID = 0  # the decoder's start token; values are 1..n_values-1


@dataclasses.dataclass
class SortConfig(config_lib.TrainingConfig):
  length: int = field(8, "Integers per sequence.", low=1, high=256)
  n_values: int = field(20, "Values are 1..n_values-1.", low=3, high=10_000)
  n_units: int = field(128, "Recurrent units.", low=1, high=4096)
  n_samples: int = field(50_000, "Training sequences.", low=1, high=10**7)
  n_eval: int = field(1000, "Fresh sequences to evaluate on.", low=1,
                      high=10**6)
  epochs: int = field(3, "Passes over the training set.", low=1, high=10**6)


def generate(config: SortConfig, stream: int, n: int) -> dict:
  """Stream 0 trains, stream 1 evaluates."""
  rng = np.random.default_rng([config.seed, stream])
  src = rng.integers(1, config.n_values, (n, config.length), dtype=np.int32)
  target = np.sort(src, axis=1)
  dec_in = np.concatenate([np.full((n, 1), START_ID, np.int32),
                           target[:, :-1]], axis=1)
  return {"src": src, "dec_in": dec_in, "target": target}


class SortTask(task.Task):
  name = "sort"
  config_cls = SortConfig
  metric = "accuracy"

  def setup(self, config: SortConfig, workdir: str) -> task.Setup:
    data = generate(config, 0, config.n_samples)
    model = models.Seq2Seq(
        src_vocab=config.n_values, tgt_vocab=config.n_values,
        settings=models.ModelSettings(units=config.n_units))
    return task.Setup(
        model=model, init_inputs=models.init_inputs(model, data), train=data,
        loss_fn=train.make_seq2seq_loss(model), title="sort",
        model_config={"task": "sort", "n_values": config.n_values,
                      "n_units": config.n_units})

  def evaluate(self, config: SortConfig, setup, state) -> dict:
    fresh = generate(config, 1, config.n_eval)
    greedy = decoding.make_decoder(setup.model, max_len=config.length,
                                   start_id=START_ID)
    pred = decoding.decode_in_batches(greedy, state.params, fresh["src"],
                                      1000)
    accuracy = float(metrics.exact_sequence_accuracy(pred, fresh["target"]))
    print(f"Sorted exactly: {accuracy * 100:.2f}% of {config.n_eval} fresh "
          f"sequences, e.g. {fresh['src'][0].tolist()} -> {pred[0].tolist()}")
    return {"accuracy": accuracy, "token_accuracy": float(
        metrics.masked_token_accuracy(pred, fresh["target"]))}


TASK = task.register(SortTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
