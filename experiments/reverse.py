"""The reverse task of the encoder-decoder tutorial.

Source: ``n_steps_in`` random integers in 1..n_features-1; target: the first
``n_steps_out`` of them reversed. A teacher-forced LSTM encoder-decoder is
trained, then evaluated by batched greedy decoding on fresh sequences
(``--beam_size=K``: beam search); ``--model=repeat_vector`` trains the
RepeatVector encoder-decoder instead, evaluated by the argmax of one
forward pass.

  python -m experiments.reverse [--n_units=128 --epochs=1 --workdir=...]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from seqjax import config as config_lib
from seqjax import decoding
from seqjax import limits
from seqjax import metrics
from seqjax import models
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax.config import field
from seqjax.data import reverse as reverse_data


@dataclasses.dataclass
class ReverseConfig(config_lib.DecodingConfig):
  n_features: int = field(51, "Cardinality: source values are 1..n_features-1"
                          " (0 is padding and the start token).", low=3,
                          high=limits.MAX_VOCAB)
  n_steps_in: int = field(6, "Source length.", low=1, high=limits.MAX_LENGTH)
  n_steps_out: int = field(3, "Target length (the first n_steps_out source "
                           "values, reversed).", low=1, high=limits.MAX_LENGTH)
  n_units: int = field(128, "LSTM units of encoder and decoder.", low=1,
                       high=limits.MAX_UNITS)
  cell: str = config_lib.cell_field()
  n_samples: int = field(100_000, "Training sequences.", low=1,
                         high=limits.MAX_EXAMPLES)
  n_eval: int = field(1000, "Fresh sequences to evaluate on.", low=1,
                      high=limits.MAX_EXAMPLES)
  n_examples: int = field(10, "Decoded examples to print.", low=0)
  model: str = field("encoder_decoder", "encoder_decoder (teacher forcing + "
                     "greedy decoding) or repeat_vector (RepeatVector + "
                     "TimeDistributed, one forward pass).",
                     choices=models.MODEL_CHOICES)

  def target_vocab(self) -> int:
    return self.n_features

  def validate(self):
    return super().validate() or self.size_errors()

  def size_errors(self) -> list[str]:
    """The lengths and counts that do not fit together."""
    errors = []
    if self.n_steps_out > self.n_steps_in:
      errors.append(f"--n_steps_out={self.n_steps_out} must not exceed "
                    f"--n_steps_in={self.n_steps_in}")
    if self.batch_size > self.n_samples:
      errors.append(f"--batch_size={self.batch_size} exceeds "
                    f"--n_samples={self.n_samples}")
    tokens = (self.n_samples + self.n_eval) * (self.n_steps_in +
                                               2 * self.n_steps_out)
    if tokens > limits.INT32_MAX:
      errors.append(f"--n_samples + --n_eval = {self.n_samples + self.n_eval:,}"
                    f" sequences of --n_steps_in + 2 --n_steps_out tokens "
                    f"make {tokens:,} tokens; at most {limits.INT32_MAX:,}")
    return errors


  def model_config(self) -> dict:
    """What the checkpoint must match."""
    saved = {"task": "reverse", "n_features": self.n_features,
             "n_units": self.n_units, "cell": self.cell}
    if self.model != "encoder_decoder":  # absent: older checkpoints resume
      saved["model"] = self.model
    return saved


class ReverseTask(task_lib.Task):
  name = "reverse"
  config_cls = ReverseConfig
  metric = "accuracy"
  size_flags = ("n_units", "n_features")
  # seqjax.group_runner: runs differing in the member flags (and these,
  # which only size the evaluation) train as one vectorized group.
  member_flags = ("n_eval", "n_examples", "beam_size", "length_penalty",
                  "sampling_temperature", "top_k", "top_p", "sampling_seed")

  def setup(self, config: ReverseConfig, workdir: str) -> task_lib.Setup:
    train = generate(config, 0, config.n_samples)
    # The tutorial prints its one-hot arrays' shapes; ours are ids, same data.
    f = config.n_features
    print(f"X1={train['src'].shape + (f,)} X2={train['dec_in'].shape + (f,)} "
          f"y={train['target'].shape + (f,)} (one-hot shapes; stored as int32 "
          "ids)")
    model = build_model(config)
    return task_lib.Setup(
        model=model, init_inputs=models.init_inputs(model, train),
        train=train, loss_fn=train_lib.make_seq2seq_loss(model),
        model_config=config.model_config(),
        title=f"{config.model} ({config.cell})")

  def evaluate(self, config: ReverseConfig, setup, state) -> dict:
    fresh = generate(config, 1, config.n_eval)
    decoder = decoding.make_decoder(
        setup.model, config.search(), max_len=config.n_steps_out,
        start_id=reverse_data.START_ID)
    yhat = decoding.decode_in_batches(decoder, state.params, fresh["src"],
                                      batch_size=min(config.n_eval, 1000),
                                      key=config.decoding_key())
    accuracy = float(metrics.exact_sequence_accuracy(yhat, fresh["target"]))
    print(f"Accuracy: {accuracy * 100:.2f}%")
    for i in range(min(config.n_examples, config.n_eval)):
      print(f"X={fresh['src'][i].tolist()} y={fresh['target'][i].tolist()}, "
            f"yhat={yhat[i].tolist()}")
    return {"accuracy": accuracy, "n_eval": config.n_eval,
            "decoder": config.describe_search(),
            "token_accuracy": float(metrics.masked_token_accuracy(
                yhat, fresh["target"]))}


def generate(config: ReverseConfig, stream: int, n: int) -> dict:
  """Stream 0 trains, stream 1 evaluates: fresh sequences of one seed."""
  return reverse_data.generate(
      np.random.default_rng([config.seed, stream]), n, config.n_steps_in,
      config.n_steps_out, config.n_features)


def build_model(config: ReverseConfig):
  return models.build_seq2seq(
      config.model, src_vocab=config.n_features, tgt_vocab=config.n_features,
      units=config.n_units, out_len=config.n_steps_out, cell=config.cell,
      dtype=config.compute_dtype())


TASK = task_lib.register(ReverseTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
